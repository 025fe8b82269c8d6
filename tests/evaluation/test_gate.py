"""The promotion gate on known contingency tables and seeded paired per-task samples."""

from __future__ import annotations

import json
import random

import pytest
from scipy.stats import binomtest

from appliance.evaluation.gate import (
    GateDecision,
    MetricResult,
    compare_binary,
    compare_continuous,
    decide,
    decide_many,
)

ALPHA = 0.05


def arms(both: int, cand_only: int, base_only: int, neither: int) -> tuple[list, list]:
    """Per-example outcomes that make exactly this paired 2x2 table."""
    candidate = [True] * both + [True] * cand_only + [False] * base_only + [False] * neither
    baseline = [True] * both + [False] * cand_only + [True] * base_only + [False] * neither
    return candidate, baseline


def binary(metric: str, both: int, cand_only: int, base_only: int, neither: int, stage="scope"):
    return compare_binary(stage, metric, *arms(both, cand_only, base_only, neither))


def test_counts_rates_and_delta_come_from_the_table():
    result = binary("accuracy", 20, 15, 1, 4)
    assert result.counts == {"both": 20, "candidate_only": 15, "baseline_only": 1, "neither": 4}
    assert result.n == 40
    assert result.candidate == pytest.approx(35 / 40)
    assert result.baseline == pytest.approx(21 / 40)
    assert result.delta == pytest.approx(14 / 40)


def test_mcnemar_p_value_is_the_exact_binomial_on_discordant_pairs():
    result = binary("accuracy", 20, 15, 1, 4)
    # Hand value: 2 * P(X <= 1), X ~ Bin(16, 1/2) = 2 * 17 / 65536.
    assert result.p_value == pytest.approx(2 * 17 / 2**16)
    assert result.p_value == pytest.approx(binomtest(1, 16, 0.5).pvalue)


def test_wilson_interval_matches_the_known_value():
    result = binary("accuracy", 8, 0, 0, 2)  # 8 of 10 in both arms
    assert result.candidate_interval == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert result.baseline_interval == result.candidate_interval


def test_paired_difference_interval_matches_newcombe_published_example():
    # Cavo et al. 2012 as worked in Fagerland, Lydersen & Laake: -0.0621 (-0.1186 to -0.0046).
    result = binary("accuracy", 59, 6, 16, 80)
    assert result.delta == pytest.approx(-0.0621, abs=1e-4)
    assert result.delta_interval == pytest.approx((-0.1186, -0.0046), abs=1e-4)


def test_clear_regression_is_blocked_and_named():
    decision = decide("scope", [binary("relevant_recall", 20, 1, 15, 4)], alpha=ALPHA, min_effect=0)
    assert decision.verdict == "reject"
    assert decision.metrics[0].outcome == "regressed"
    assert len(decision.reasons) == 2
    assert decision.reasons[0].startswith("relevant_recall regressed: 0.875 → 0.525 (Δ −0.35")
    assert "a significant fall" in decision.reasons[0]
    assert decision.reasons[1] == "no metric improved significantly (tie)"


@pytest.mark.parametrize(
    "table",
    [(20, 6, 6, 8), (25, 0, 0, 15)],
    ids=["b equals c", "no discordant pairs"],
)
def test_a_tie_is_blocked(table):
    result = binary("accuracy", *table)
    assert result.delta == 0
    # At 40 tasks a tie cannot rule out a drop of 0.05: non-inferiority is not shown.
    decision = decide("scope", [result], alpha=ALPHA, min_effect=0)
    assert decision.verdict == "reject"
    assert decision.metrics[0].outcome == "not shown non-inferior"
    assert "non-inferiority not shown" in decision.reasons[0]
    assert "regressed" not in decision.reasons[0]  # nothing fell: it could not be ruled out
    # With a margin the interval clears, it is a plain tie.
    lenient = decide("scope", [result], alpha=ALPHA, min_effect=0, max_regression=0.3)
    assert lenient.verdict == "reject"
    assert lenient.metrics[0].outcome == "unchanged"
    assert lenient.reasons == ("no metric improved significantly (tie)",)


def test_no_discordant_pairs_gives_p_one():
    assert binary("accuracy", 25, 0, 0, 15).p_value == 1.0


def test_clear_improvement_is_promoted():
    decision = decide("scope", [binary("accuracy", 20, 15, 1, 4)], alpha=ALPHA, min_effect=0.05)
    assert decision.verdict == "promote"
    assert decision.metrics[0].outcome == "improved"
    assert decision.reasons[0].startswith("accuracy improved: 0.525 → 0.875 (Δ +0.35")


def test_improvement_with_a_regression_elsewhere_is_blocked():
    results = [binary("accuracy", 20, 15, 1, 4), binary("relevant_recall", 20, 1, 15, 4)]
    decision = decide("scope", results, alpha=ALPHA, min_effect=0.05)
    assert [m.outcome for m in decision.metrics] == ["improved", "regressed"]
    assert decision.verdict == "reject"
    assert decision.reasons[0].startswith("relevant_recall regressed")


def test_significant_improvement_below_min_effect_is_not_promoted():
    # 15 vs 1 discordant pairs out of 400: significant, but only +0.035.
    result = binary("accuracy", 200, 15, 1, 184)
    assert result.p_value < ALPHA
    blocked = decide("scope", [result], alpha=ALPHA, min_effect=0.05)
    assert blocked.verdict == "reject"
    assert blocked.metrics[0].outcome == "unchanged"
    assert blocked.reasons[0] == "no metric improved significantly (tie)"
    assert "below the minimum effect 0.05" in blocked.reasons[1]
    assert decide("scope", [result], alpha=ALPHA, min_effect=0.03).verdict == "promote"


def test_benjamini_hochberg_across_stages_blocks_a_borderline_gain():
    # 10 vs 2 discordant pairs: exact p = 2 * 79 / 4096 ~ 0.039.
    borderline = binary("accuracy", 20, 10, 2, 8, stage="scope")
    assert borderline.p_value == pytest.approx(2 * 79 / 4096)
    alone = decide_many({"scope": [borderline]}, alpha=ALPHA, min_effect=0.05)
    assert alone["scope"].verdict == "promote"

    together = decide_many(
        {
            "task_analysis": [binary("file_recall", 20, 5, 5, 10, stage="task_analysis")],
            "scope": [borderline],
            "precision": [binary("accuracy", 20, 4, 3, 13, stage="precision")],
            "plan": [binary("success", 20, 2, 3, 15, stage="plan")],
        },
        alpha=ALPHA,
        min_effect=0.05,
    )
    assert together["scope"].metrics[0].p_adjusted == pytest.approx(4 * borderline.p_value)
    assert together["scope"].verdict == "reject"
    assert set(together) == {"task_analysis", "scope", "precision", "plan"}


def test_decide_adjusts_within_one_stage():
    results = [binary("accuracy", 20, 10, 2, 8), binary("relevant_recall", 20, 5, 5, 10)]
    decision = decide("scope", results, alpha=ALPHA, min_effect=0.05)
    assert decision.metrics[0].p_adjusted == pytest.approx(2 * results[0].p_value)
    assert decision.verdict == "reject"


def test_no_results_are_insufficient():
    decision = decide("scope", [], alpha=ALPHA, min_effect=0.05)
    assert decision.verdict == "insufficient"
    assert decision.n_tasks == 0
    assert "n = 0; min_tasks 10" in decision.reasons[0]
    assert "holdout_fraction" in decision.reasons[0]


def test_decide_refuses_metrics_of_another_stage():
    with pytest.raises(ValueError, match="plan"):
        decide("scope", [binary("accuracy", 20, 10, 2, 8, stage="plan")], alpha=ALPHA, min_effect=0)


def seeded_scores(n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(0.0, 1.0) for _ in range(n)]


def test_clearly_higher_continuous_scores_improve():
    baseline, noise = seeded_scores(50, seed=1), seeded_scores(50, seed=2)
    candidate = [b + 0.2 + 0.05 * e for b, e in zip(baseline, noise, strict=True)]
    result = compare_continuous("plan", "resolved", candidate, baseline, resamples=999)
    assert result.delta == pytest.approx(0.2 + 0.05 * sum(noise) / 50)
    assert result.delta_interval[0] > 0.2
    assert result.p_value == pytest.approx(1 / 1000)  # never 0
    assert result.counts == {"better": 50, "worse": 0, "same": 0}
    decision = decide("plan", [result], alpha=ALPHA, min_effect=0.05)
    assert decision.verdict == "promote"


def test_shuffled_continuous_scores_do_not_improve():
    baseline = seeded_scores(50, seed=1)
    candidate = list(baseline)
    random.Random(3).shuffle(candidate)
    result = compare_continuous("plan", "resolved", candidate, baseline)
    assert abs(result.delta) < 1e-12
    assert result.p_value > 0.5
    assert decide("plan", [result], alpha=ALPHA, min_effect=0).verdict == "reject"


def test_identical_continuous_scores_give_p_one_and_no_delta():
    baseline = seeded_scores(30, seed=1)
    result = compare_continuous("plan", "resolved", list(baseline), baseline)
    assert result.delta == 0
    assert result.p_value == 1.0
    assert result.delta_interval == (0.0, 0.0)
    assert result.counts == {"better": 0, "worse": 0, "same": 30}


def test_continuous_result_is_deterministic_per_seed():
    baseline, noise = seeded_scores(40, seed=1), seeded_scores(40, seed=2)
    candidate = [b + 0.02 * (e - 0.3) for b, e in zip(baseline, noise, strict=True)]
    first = compare_continuous("plan", "resolved", candidate, baseline, seed=7)
    again = compare_continuous("plan", "resolved", candidate, baseline, seed=7)
    other = compare_continuous("plan", "resolved", candidate, baseline, seed=8)
    assert first == again
    assert other.delta_interval != first.delta_interval


@pytest.mark.parametrize("compare", [compare_binary, compare_continuous])
def test_arms_of_different_lengths_are_refused(compare):
    with pytest.raises(ValueError, match="candidate has 3 values, baseline 2"):
        compare("scope", "accuracy", [1, 0, 1], [1, 0])


@pytest.mark.parametrize("compare", [compare_binary, compare_continuous])
def test_empty_arms_are_refused(compare):
    with pytest.raises(ValueError, match="no evaluation examples"):
        compare("scope", "accuracy", [], [])


def test_binary_values_must_be_pass_or_fail():
    with pytest.raises(ValueError, match="found 0.5"):
        compare_binary("scope", "accuracy", [True, 0.5], [True, False])


def test_decision_to_dict_is_json_ready():
    results = [
        binary("accuracy", 20, 15, 1, 4),
        compare_continuous("scope", "f1", seeded_scores(20, 1), seeded_scores(20, 2)),
    ]
    decision = decide("scope", results, alpha=ALPHA, min_effect=0.05, max_regression=1.0)
    data = json.loads(json.dumps(decision.to_dict()))
    assert data["verdict"] == "promote"
    assert data["alpha"] == ALPHA and data["min_effect"] == 0.05
    assert data["max_regression"] == 1.0 and data["min_tasks"] == 10 and data["n_tasks"] == 20
    assert data["reasons"] == list(decision.reasons)
    assert [m["metric"] for m in data["metrics"]] == ["accuracy", "f1"]
    assert data["metrics"][0]["p_value"] == pytest.approx(results[0].p_value)
    assert data["metrics"][0]["delta_interval"] == list(decision.metrics[0].delta_interval)
    assert data["metrics"][0]["outcome"] == "improved"


def test_render_has_a_line_per_metric_then_the_verdict():
    results = [binary("accuracy", 20, 15, 1, 4), binary("relevant_recall", 20, 1, 15, 4)]
    lines = decide("scope", results, alpha=ALPHA, min_effect=0.05).render()
    assert lines[0].startswith("scope/accuracy (binary, n=40 tasks): candidate 0.875")
    assert "vs active 0.525" in lines[0]
    assert lines[0].endswith("improved")
    assert "adjusted p =" in lines[1] and lines[1].endswith("regressed")
    assert lines[2].startswith("scope: reject")
    assert lines[3].strip().startswith("relevant_recall regressed")


def test_public_types_are_frozen():
    result = binary("accuracy", 20, 15, 1, 4)
    decision = decide("scope", [result], alpha=ALPHA, min_effect=0.05)
    assert isinstance(result, MetricResult) and isinstance(decision, GateDecision)
    with pytest.raises(AttributeError):
        result.p_value = 0.0  # type: ignore[misc]
