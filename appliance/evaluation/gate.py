"""The promotion gate: paired comparisons of a candidate adapter against the active one on
the same held-out examples (McNemar's exact test for pass/fail metrics, a paired bootstrap
for continuous ones), Benjamini–Hochberg across every metric decided together, and the
promote/reject verdict with the operator-readable reasons for it."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from appliance.records import as_json

Interval = tuple[float, float]


@dataclass(frozen=True)
class MetricResult:
    """One metric of one stage: candidate vs baseline on the same `n` examples."""

    stage: str
    metric: str
    kind: Literal["binary", "continuous"]
    n: int
    candidate: float
    baseline: float
    candidate_interval: Interval
    baseline_interval: Interval
    delta: float
    delta_interval: Interval
    p_value: float
    counts: dict
    p_adjusted: float | None = None
    outcome: str | None = None

    def to_dict(self) -> dict:
        return as_json(self)  # the intervals as lists


@dataclass(frozen=True)
class GateDecision:
    """The verdict for one stage, with the metrics it rests on and why."""

    stage: str
    verdict: Literal["promote", "reject"]
    reasons: tuple[str, ...]
    metrics: tuple[MetricResult, ...]
    alpha: float
    min_effect: float

    def to_dict(self) -> dict:
        return as_json(self, "stage", "verdict", "reasons", "alpha", "min_effect", "metrics")

    @classmethod
    def from_dict(cls, data: dict) -> GateDecision:
        """Back from to_dict() (a decision stored, or sent by the daemon)."""
        intervals = ("candidate_interval", "baseline_interval", "delta_interval")
        metrics = tuple(
            MetricResult(**{k: tuple(v) if k in intervals else v for k, v in m.items()})
            for m in data["metrics"]
        )
        return cls(data["stage"], data["verdict"], tuple(data["reasons"]), metrics,
                   data["alpha"], data["min_effect"])  # fmt: skip

    def render(self) -> list[str]:
        lines = [_metric_line(m) for m in self.metrics]
        lines.append(
            f"{self.stage}: {self.verdict} (alpha {self.alpha:g}, min effect {self.min_effect:g})"
        )
        lines.extend(f"  {reason}" for reason in self.reasons)
        return lines


def compare_binary(
    stage: str,
    metric: str,
    candidate: Sequence[bool],
    baseline: Sequence[bool],
    *,
    confidence: float = 0.95,
) -> MetricResult:
    """Compare per-example pass/fail outcomes of the two adapters."""
    _check_arms(stage, metric, candidate, baseline)
    _check_confidence(confidence)
    for arm, values in (("candidate", candidate), ("baseline", baseline)):
        bad = [v for v in values if v not in (0, 1)]
        if bad:
            raise ValueError(
                f"{stage}/{metric}: binary {arm} values must be True/False (or 1/0); "
                f"found {bad[0]!r}"
            )
    cand = [bool(v) for v in candidate]
    base = [bool(v) for v in baseline]
    n = len(cand)
    both = sum(c and b for c, b in zip(cand, base, strict=True))
    cand_only = sum(c and not b for c, b in zip(cand, base, strict=True))
    base_only = sum(b and not c for c, b in zip(cand, base, strict=True))
    neither = n - both - cand_only - base_only

    if cand_only + base_only == 0:
        # No discordant pair: the data carry no evidence either way.
        p_value = 1.0
    else:
        table = [[both, cand_only], [base_only, neither]]
        p_value = min(1.0, float(mcnemar(table, exact=True).pvalue))

    return MetricResult(
        stage=stage,
        metric=metric,
        kind="binary",
        n=n,
        candidate=(both + cand_only) / n,
        baseline=(both + base_only) / n,
        candidate_interval=_wilson(both + cand_only, n, confidence),
        baseline_interval=_wilson(both + base_only, n, confidence),
        delta=(cand_only - base_only) / n,
        delta_interval=_paired_difference_interval(both, cand_only, base_only, neither, confidence),
        p_value=p_value,
        counts={
            "both": both,
            "candidate_only": cand_only,
            "baseline_only": base_only,
            "neither": neither,
        },
    )


def compare_continuous(
    stage: str,
    metric: str,
    candidate: Sequence[float],
    baseline: Sequence[float],
    *,
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> MetricResult:
    """Compare per-example scores of the two adapters with a seeded paired bootstrap."""
    _check_arms(stage, metric, candidate, baseline)
    _check_confidence(confidence)
    if resamples < 1:
        raise ValueError(f"{stage}/{metric}: resamples must be >= 1; got {resamples}")
    cand = np.asarray(candidate, dtype=float)
    base = np.asarray(baseline, dtype=float)
    if not (np.isfinite(cand).all() and np.isfinite(base).all()):
        raise ValueError(f"{stage}/{metric}: scores must be finite numbers (found NaN or inf)")
    n = len(cand)

    # The same example indices for both arms keep each pair together.
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    cand_means = cand[idx].mean(axis=1)
    base_means = base[idx].mean(axis=1)
    deltas = cand_means - base_means

    delta = float(cand.mean() - base.mean())
    # Two-sided p by the shifted bootstrap: the resampled deltas, recentred on 0 (the null),
    # that are at least as far from 0 as the observed one; +1 on both sides so p is never 0.
    extreme = int(np.count_nonzero(np.abs(deltas - delta) >= abs(delta)))
    p_value = min(1.0, (extreme + 1) / (resamples + 1))

    return MetricResult(
        stage=stage,
        metric=metric,
        kind="continuous",
        n=n,
        candidate=float(cand.mean()),
        baseline=float(base.mean()),
        candidate_interval=_percentile_interval(cand_means, confidence),
        baseline_interval=_percentile_interval(base_means, confidence),
        delta=delta,
        delta_interval=_percentile_interval(deltas, confidence),
        p_value=p_value,
        counts={
            "better": int(np.count_nonzero(cand > base)),
            "worse": int(np.count_nonzero(cand < base)),
            "same": int(np.count_nonzero(cand == base)),
        },
    )


def decide(
    stage: str, results: Sequence[MetricResult], *, alpha: float, min_effect: float
) -> GateDecision:
    """Decide one stage: BH over its own metrics, then the verdict."""
    return decide_many({stage: results}, alpha=alpha, min_effect=min_effect)[stage]


def decide_many(
    results: Mapping[str, Sequence[MetricResult]], *, alpha: float, min_effect: float
) -> dict[str, GateDecision]:
    """Decide several stages together: BH over all their p-values at once, then each
    stage's verdict."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1 (exclusive); got {alpha}")
    if min_effect < 0:
        raise ValueError(f"min_effect must be >= 0; got {min_effect}")
    for stage, metrics in results.items():
        strays = sorted({m.stage for m in metrics if m.stage != stage})
        if strays:
            raise ValueError(f"results for stage {stage!r} include metrics of {strays}")

    flat = [m for metrics in results.values() for m in metrics]
    adjusted: list[float] = []
    if flat:
        adjusted = [
            float(p)
            for p in multipletests([m.p_value for m in flat], alpha=alpha, method="fdr_bh")[1]
        ]
    decided = iter(
        replace(m, p_adjusted=p, outcome=_outcome(m.delta, p, alpha, min_effect))
        for m, p in zip(flat, adjusted, strict=True)
    )
    decisions = {}
    for stage, metrics in results.items():
        stage_metrics = tuple(next(decided) for _ in metrics)
        verdict, reasons = _verdict(stage_metrics, alpha, min_effect)
        decisions[stage] = GateDecision(
            stage=stage,
            verdict=verdict,
            reasons=reasons,
            metrics=stage_metrics,
            alpha=alpha,
            min_effect=min_effect,
        )
    return decisions


def _outcome(delta: float, p_adjusted: float, alpha: float, min_effect: float) -> str:
    if p_adjusted < alpha and delta < 0:
        return "regressed"
    if p_adjusted < alpha and delta >= min_effect:
        return "improved"
    return "unchanged"


def _verdict(
    metrics: tuple[MetricResult, ...], alpha: float, min_effect: float
) -> tuple[Literal["promote", "reject"], tuple[str, ...]]:
    if not metrics:
        return "reject", ("no evaluation examples",)
    regressed = [m for m in metrics if m.outcome == "regressed"]
    improved = [m for m in metrics if m.outcome == "improved"]
    if regressed:
        return "reject", tuple(_change(m, "regressed") for m in regressed)
    if improved:
        return "promote", (
            *(_change(m, "improved") for m in improved),
            "no metric regressed",
        )
    reasons = ["no metric improved significantly (tie)"]
    # A significant gain too small to count is worth naming: it is not a plain tie.
    reasons += [
        f"{_change(m, 'rose')}, below the minimum effect {min_effect:g}"
        for m in metrics
        if m.p_adjusted is not None and m.p_adjusted < alpha and m.delta > 0
    ]
    return "reject", tuple(reasons)


def _change(m: MetricResult, word: str) -> str:
    return (
        f"{m.metric} {word}: {_num(m.baseline)} → {_num(m.candidate)} "
        f"(Δ {_signed(m.delta)}, p = {_num(m.p_value)}, adjusted p = {_num(m.p_adjusted)})"
    )


def _metric_line(m: MetricResult) -> str:
    return (
        f"{m.stage}/{m.metric} ({m.kind}, n={m.n}): "
        f"candidate {_num(m.candidate)} {_interval(m.candidate_interval)} vs "
        f"baseline {_num(m.baseline)} {_interval(m.baseline_interval)}; "
        f"Δ {_signed(m.delta)} {_interval(m.delta_interval)}; "
        f"p = {_num(m.p_value)}, adjusted p = {_num(m.p_adjusted)}; {m.outcome or 'undecided'}"
    )


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.3g}"


def _signed(x: float) -> str:
    return f"{x:+.3g}".replace("-", "−")


def _interval(interval: Interval) -> str:
    low, high = interval
    return f"[{_num(low).replace('-', '−')}, {_num(high).replace('-', '−')}]"


def _check_arms(stage: str, metric: str, candidate: Sequence, baseline: Sequence) -> None:
    if len(candidate) != len(baseline):
        raise ValueError(
            f"{stage}/{metric}: the arms must be paired example by example; candidate has "
            f"{len(candidate)} values, baseline {len(baseline)}"
        )
    if len(candidate) < 1:
        raise ValueError(f"{stage}/{metric}: no evaluation examples (both arms are empty)")


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive); got {confidence}")


def _wilson(successes: int, n: int, confidence: float) -> Interval:
    low, high = proportion_confint(successes, n, alpha=1 - confidence, method="wilson")
    return float(low), float(high)


def _percentile_interval(samples: np.ndarray, confidence: float) -> Interval:
    tail = (1 - confidence) / 2
    low, high = np.quantile(samples, [tail, 1 - tail])
    return float(low), float(high)


def _paired_difference_interval(
    both: int, cand_only: int, base_only: int, neither: int, confidence: float
) -> Interval:
    """Newcombe's (1998) method 10 for a difference of paired proportions: the arms' Wilson
    intervals combined through their (continuity-corrected) correlation."""
    n = both + cand_only + base_only + neither
    p1, p2 = (both + cand_only) / n, (both + base_only) / n
    l1, u1 = _wilson(both + cand_only, n, confidence)
    l2, u2 = _wilson(both + base_only, n, confidence)
    marginals = (
        (both + cand_only) * (base_only + neither) * (both + base_only) * (cand_only + neither)
    )
    cross = both * neither - cand_only * base_only
    if cross > n / 2:
        cross -= n / 2
    elif cross > 0:
        cross = 0
    phi = cross / math.sqrt(marginals) if marginals > 0 else 0.0
    delta = p1 - p2
    low = delta - math.sqrt(
        max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    )
    high = delta + math.sqrt(
        max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
    )
    return max(-1.0, low), min(1.0, high)
