"""The gate over tasks, on the issue's own cases: constant answers, non-inferiority, too few
tasks, and the permutation test's exact p-values."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from appliance.evaluation.gate import (
    BaselineScore,
    GateDecision,
    compare_binary,
    compare_continuous,
    decide,
)

ALPHA = 0.05
# Per task: the share of the listed files that are relevant (what "every file relevant" scores).
RELEVANT_SHARE = [0.8, 0.75, 0.9, 0.8, 0.7, 0.85, 0.8, 0.75, 0.9, 0.8, 0.7, 0.85]
WEAK_ACTIVE = [0.4, 0.5, 0.3, 0.45, 0.35, 0.5, 0.4, 0.3, 0.45, 0.5, 0.35, 0.4]
ALL_RELEVANT = BaselineScore("every file relevant", float(np.mean(RELEVANT_SHARE)))


def continuous(metric: str, candidate, active, stage="scope"):
    return compare_continuous(stage, metric, candidate, active, resamples=2000, seed=0)


def test_every_file_relevant_as_the_candidate_ties_its_baseline_and_is_not_promoted():
    result = continuous("accuracy", RELEVANT_SHARE, WEAK_ACTIVE)
    assert result.n == 12 and result.unit == "task"
    assert result.p_value == pytest.approx(2 / 2**12)  # every task better: exact
    # Without the baseline it would pass: it is the baseline that shows it is trivial.
    assert decide("scope", [result], alpha=ALPHA, min_effect=0.02).verdict == "promote"
    decision = decide(
        "scope", [result], alpha=ALPHA, min_effect=0.02, baselines={"accuracy": ALL_RELEVANT}
    )
    assert decision.verdict == "reject"
    assert decision.metrics[0].outcome == "no better than a baseline"
    assert decision.reasons[0] == (
        "no metric improved on both the active version and the best baseline"
    )
    assert "“every file relevant” scores 0.8, the candidate 0.8" in " ".join(decision.reasons)
    assert decision.baselines == {"accuracy": ALL_RELEVANT}


def test_every_file_irrelevant_drops_recall_without_significance_and_is_rejected():
    # Active finds the relevant files of 3 of 12 tasks (recall 0.25); the constant answer none.
    active = [1.0, 1.0, 1.0] + [0.0] * 9
    recall = continuous("relevant_recall", [0.0] * 12, active)
    assert recall.delta == pytest.approx(-0.25)
    assert recall.p_value == pytest.approx(2 / 8)  # 3 non-zero pairs: not significant
    accuracy = continuous("accuracy", RELEVANT_SHARE, WEAK_ACTIVE)
    decision = decide("scope", [accuracy, recall], alpha=ALPHA, min_effect=0.02)
    assert [m.outcome for m in decision.metrics] == ["improved", "not shown non-inferior"]
    assert decision.verdict == "reject"
    (reason,) = [r for r in decision.reasons if r.startswith("relevant_recall")]
    assert "not a significant fall" in reason and "non-inferiority not shown" in reason


def test_a_significant_fall_inside_the_margin_passes_and_is_named():
    active = [0.5, 0.45, 0.55, 0.5, 0.6, 0.4, 0.5, 0.55, 0.45, 0.5, 0.6, 0.5, 0.45, 0.5]
    slightly_lower = [a - 0.01 for a in active]
    fell = continuous("relevant_recall", slightly_lower, active)
    assert fell.p_value < ALPHA and fell.delta_interval[0] > -0.05
    rose = continuous("accuracy", RELEVANT_SHARE + [0.8, 0.8], WEAK_ACTIVE + [0.4, 0.4])
    decision = decide("scope", [rose, fell], alpha=ALPHA, min_effect=0.02)
    assert [m.outcome for m in decision.metrics] == ["improved", "unchanged"]
    assert decision.verdict == "promote"
    assert decision.reasons[-1].startswith("relevant_recall fell: 0.504 → 0.494 (Δ −0.01")
    assert decision.reasons[-1].endswith("within the margin 0.05")


def test_one_task_gives_p_one_and_two_agreeing_tasks_at_least_a_half():
    assert continuous("accuracy", [1.0], [0.0]).p_value == 1.0
    two = continuous("accuracy", [0.9, 0.8], [0.1, 0.2])
    assert two.p_value >= 0.5
    decision = decide("scope", [two], alpha=ALPHA, min_effect=0.02)
    assert decision.verdict == "insufficient" and decision.n_tasks == 2


def test_nine_tasks_are_insufficient_however_large_the_gain():
    result = continuous("accuracy", [1.0] * 9, [0.0] * 9)
    decision = decide("scope", [result], alpha=ALPHA, min_effect=0.02)
    assert decision.verdict == "insufficient"
    assert "n = 9" in decision.reasons[0] and "min_tasks 10" in decision.reasons[0]
    assert "holdout_fraction" in decision.reasons[0]
    assert decide("scope", [result], alpha=ALPHA, min_effect=0.02, min_tasks=9).verdict == (
        "promote"
    )


def test_a_real_improvement_above_active_and_the_best_baseline_is_promoted():
    active = [0.5, 0.45, 0.55, 0.5, 0.6, 0.4, 0.5, 0.55, 0.45, 0.5, 0.6, 0.5, 0.45, 0.5]
    candidate = [a + 0.35 + 0.01 * (i % 3) for i, a in enumerate(active)]
    best = BaselineScore("the package's 2 most-changed files", 0.6)
    result = continuous("accuracy", candidate, active)
    assert result.delta_interval[0] > 0.3
    decision = decide("scope", [result], alpha=ALPHA, min_effect=0.02, baselines={"accuracy": best})
    assert decision.verdict == "promote"
    assert decision.metrics[0].outcome == "improved"
    assert "“the package's 2 most-changed files” scores 0.6" in decision.reasons[0]
    assert "best baseline “the package's 2 most-changed files” 0.6" in decision.render()[0]


def test_the_exact_permutation_p_is_the_share_of_sign_vectors_as_extreme():
    candidate = [0.9, 0.2, 0.7, 0.6, 0.4, 0.8]
    active = [0.5, 0.3, 0.4, 0.6, 0.1, 0.2]
    diffs = np.subtract(candidate, active)
    observed = abs(diffs.mean())
    extreme = sum(
        abs(np.mean(np.multiply(signs, diffs))) >= observed - 1e-12
        for signs in itertools.product([-1, 1], repeat=len(diffs))
    )
    result = continuous("accuracy", candidate, active)
    assert result.p_value == pytest.approx(extreme / 2 ** len(diffs))
    assert result.counts == {"better": 4, "worse": 1, "same": 1}


def test_many_tasks_are_sampled_and_p_is_never_zero():
    active = [0.1 * (i % 5) for i in range(30)]
    result = compare_continuous(
        "scope", "accuracy", [a + 0.5 for a in active], active, resamples=499
    )
    assert result.p_value == pytest.approx(1 / 500)
    again = compare_continuous("scope", "accuracy", [a + 0.5 for a in active], active)
    assert again == compare_continuous("scope", "accuracy", [a + 0.5 for a in active], active)


def test_binary_outcomes_are_per_task():
    result = compare_binary("plan", "resolved", [True] * 8 + [False] * 4, [False] * 12)
    assert result.unit == "task" and result.n == 12


def test_a_decision_round_trips_through_json_with_its_baselines():
    result = continuous("accuracy", RELEVANT_SHARE, WEAK_ACTIVE)
    decision = decide(
        "scope", [result], alpha=ALPHA, min_effect=0.02, baselines={"accuracy": ALL_RELEVANT}
    )
    data = json.loads(json.dumps(decision.to_dict()))
    assert data["best_baselines"] == {
        "accuracy": {"name": "every file relevant", "value": pytest.approx(0.8)}
    }
    assert GateDecision.from_dict(data) == decision


def test_a_decision_stored_by_the_old_gate_still_loads_and_renders():
    metric = {
        "stage": "scope", "metric": "accuracy", "kind": "binary", "n": 40,
        "candidate": 0.875, "baseline": 0.525, "candidate_interval": [0.74, 0.95],
        "baseline_interval": [0.37, 0.67], "delta": 0.35, "delta_interval": [0.18, 0.49],
        "p_value": 0.0005, "counts": {"both": 20, "candidate_only": 15, "baseline_only": 1,
        "neither": 4}, "p_adjusted": 0.0005, "outcome": "improved",
    }  # fmt: skip
    old = {"stage": "scope", "verdict": "promote", "reasons": ["accuracy improved"],
           "alpha": 0.05, "min_effect": 0.02, "metrics": [metric]}  # fmt: skip
    decision = GateDecision.from_dict(old)
    assert decision.verdict == "promote" and decision.n_tasks == 0
    assert (decision.max_regression, decision.min_tasks, decision.baselines) == (0.05, 10, {})
    # Counted per item then (files, symbols), and rendered so, under the rules of then.
    assert decision.metrics[0].unit == "item"
    lines = decision.render()
    assert lines[0].startswith("scope/accuracy (binary, n=40 items): candidate 0.875")
    assert lines[1] == "scope: promote (alpha 0.05, min effect 0.02)"


@pytest.mark.parametrize(
    ("setting", "value"), [("max_regression", -0.1), ("max_regression", 1.5), ("min_tasks", 0)]
)
def test_bad_gate_settings_are_refused(setting, value):
    with pytest.raises(ValueError, match=setting):
        decide("scope", [], alpha=ALPHA, min_effect=0.02, **{setting: value})
