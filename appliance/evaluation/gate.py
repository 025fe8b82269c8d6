"""The promotion gate: paired comparisons of a candidate adapter against the active one,
task by task on the same held-out tasks (McNemar's exact test for a task's pass/fail, a
paired sign-flip permutation test with a paired bootstrap interval for per-task
fractions), Benjamini–Hochberg across every metric decided together, and the
promote/reject/insufficient verdict with the operator-readable reasons for it.

A candidate is promoted only when enough tasks were compared (`min_tasks`), some metric
improved significantly by `min_effect` and beat the best trivial baseline by as much,
and no metric's interval of (candidate − active) reaches below −`max_regression`
(non-inferiority: the absence of a significant drop is not taken for its absence)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from appliance.records import as_json

Interval = tuple[float, float]
# A metric whose interval reaches below −max_regression without a significant fall.
NOT_NON_INFERIOR = "not shown non-inferior"
Verdict = Literal["promote", "reject", "insufficient"]
Key = str | tuple  # what decide_many decides: a stage, or (stage, which candidate)
EXACT_MAX_TASKS = 16  # up to this many tasks the permutation test enumerates every sign vector


@dataclass(frozen=True)
class MetricResult:
    """One metric of one stage: candidate vs baseline (the active version, or the base)
    on the same `n` tasks."""

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
    unit: str = "task"

    def to_dict(self) -> dict:
        return as_json(self)  # the intervals as lists


@dataclass(frozen=True)
class BaselineScore:
    """The best trivial (answer-free) baseline's score of one metric on the same tasks."""

    name: str  # "every file relevant"
    value: float


@dataclass(frozen=True)
class GateDecision:
    """The verdict for one stage, with the metrics it rests on and why."""

    stage: str
    verdict: Verdict
    reasons: tuple[str, ...]
    metrics: tuple[MetricResult, ...]
    alpha: float
    min_effect: float
    max_regression: float = 0.05
    min_tasks: int = 10
    n_tasks: int = 0  # the fewest tasks any metric was compared on
    baselines: dict[str, BaselineScore] = field(default_factory=dict)  # metric -> best

    def to_dict(self) -> dict:
        keys = ("stage", "verdict", "reasons", "alpha", "min_effect", "max_regression",
                "min_tasks", "n_tasks", "metrics")  # fmt: skip
        # "best_baselines": an evaluation's report lists every baseline as "baselines"
        return as_json(self, *keys, best_baselines=self.baselines)

    @classmethod
    def from_dict(cls, data: dict) -> GateDecision:
        """Back from to_dict() (a decision stored, or sent by the daemon); one stored
        before the task-level gate gets the defaults of the keys it lacks, and its metrics
        the unit they were counted in then: the item (a file, a symbol)."""
        intervals = ("candidate_interval", "baseline_interval", "delta_interval")
        metrics = tuple(
            MetricResult(**{"unit": "item"}
                         | {k: tuple(v) if k in intervals else v for k, v in m.items()})
            for m in data["metrics"]
        )  # fmt: skip
        return cls(
            data["stage"],
            data["verdict"],
            tuple(data["reasons"]),
            metrics,
            data["alpha"],
            data["min_effect"],
            data.get("max_regression", cls.max_regression),
            data.get("min_tasks", cls.min_tasks),
            data.get("n_tasks", 0),
            {k: BaselineScore(**v) for k, v in data.get("best_baselines", {}).items()},
        )

    def render(self) -> list[str]:
        lines = [_metric_line(m, self.baselines.get(m.metric)) for m in self.metrics]
        rules = f"alpha {self.alpha:g}, min effect {self.min_effect:g}"
        if all(m.unit == "task" for m in self.metrics):  # else decided by the old item gate
            rules += (f", max regression {self.max_regression:g}, {self.n_tasks} tasks of "
                      f"at least {self.min_tasks}")  # fmt: skip
        lines.append(f"{self.stage}: {self.verdict} ({rules})")
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
    """Compare per-task pass/fail outcomes of the two adapters (McNemar's exact test)."""
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
    """Compare per-task scores of the two adapters: p by a paired sign-flip permutation
    test over tasks, the intervals by a seeded paired bootstrap over tasks."""
    _check_arms(stage, metric, candidate, baseline)
    _check_confidence(confidence)
    if resamples < 1:
        raise ValueError(f"{stage}/{metric}: resamples must be >= 1; got {resamples}")
    cand = np.asarray(candidate, dtype=float)
    base = np.asarray(baseline, dtype=float)
    if not (np.isfinite(cand).all() and np.isfinite(base).all()):
        raise ValueError(f"{stage}/{metric}: scores must be finite numbers (found NaN or inf)")
    n = len(cand)

    # The same task indices for both arms keep each pair together.
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    cand_means = cand[idx].mean(axis=1)
    base_means = base[idx].mean(axis=1)
    deltas = cand_means - base_means
    delta = float(cand.mean() - base.mean())
    p_value = _sign_flip_p(cand - base, resamples, rng)

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


def _sign_flip_p(differences: np.ndarray, resamples: int, rng: np.random.Generator) -> float:
    """Two-sided p of the paired differences' mean under the null that each task's sign is
    a coin flip: every sign vector when there are few tasks (so 1 task gives 1.0, 2 give
    at least 0.5), else `resamples` seeded ones, counted (extreme + 1) / (resamples + 1)."""
    n = len(differences)
    observed = abs(differences.mean())
    tolerance = 1e-12 * max(1.0, float(np.abs(differences).max()))
    if n <= EXACT_MAX_TASKS:
        bits = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
        means = np.abs(((2 * bits - 1) * differences).mean(axis=1))
        return float(np.count_nonzero(means >= observed - tolerance) / 2**n)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(resamples, n))
    means = np.abs((signs * differences).mean(axis=1))
    extreme = int(np.count_nonzero(means >= observed - tolerance))
    return min(1.0, (extreme + 1) / (resamples + 1))


def decide(
    stage: str,
    results: Sequence[MetricResult],
    *,
    alpha: float,
    min_effect: float,
    max_regression: float = 0.05,
    min_tasks: int = 10,
    baselines: Mapping[str, BaselineScore] | None = None,
) -> GateDecision:
    """Decide one stage: BH over its own metrics, then the verdict; `baselines` is
    metric -> the best trivial baseline's score on the same tasks."""
    return decide_many(
        {stage: results},
        alpha=alpha,
        min_effect=min_effect,
        max_regression=max_regression,
        min_tasks=min_tasks,
        baselines={stage: baselines} if baselines else None,
    )[stage]


@dataclass(frozen=True)
class _Rules:
    alpha: float
    min_effect: float
    max_regression: float
    min_tasks: int


def decide_many(
    results: Mapping[Key, Sequence[MetricResult]],
    *,
    alpha: float,
    min_effect: float,
    max_regression: float = 0.05,
    min_tasks: int = 10,
    baselines: Mapping[Key, Mapping[str, BaselineScore]] | None = None,
) -> dict[Key, GateDecision]:
    """Decide several stages together: BH over all their p-values at once, then each
    stage's verdict. A key is a stage, or (stage, anything) where one stage has several
    candidates (the cycle's SFT and DPO ones): each is decided on its own metrics, and
    all their p-values are in the one BH family. `baselines`: key -> metric -> the best
    trivial baseline's score on the same tasks (a metric without one is not held to a
    baseline)."""
    rules = _Rules(alpha, min_effect, max_regression, min_tasks)
    _check_rules(rules)
    baselines = baselines or {}
    for key, metrics in results.items():
        strays = sorted({m.stage for m in metrics if m.stage != _stage_of(key)})
        if strays:
            raise ValueError(f"results for stage {_stage_of(key)!r} include metrics of {strays}")

    flat = [(key, m) for key, metrics in results.items() for m in metrics]
    adjusted: list[float] = []
    if flat:
        adjusted = [
            float(p)
            for p in multipletests([m.p_value for _, m in flat], alpha=alpha, method="fdr_bh")[1]
        ]
    decided = iter(
        replace(m, p_adjusted=p,
                outcome=_outcome(replace(m, p_adjusted=p),
                                 baselines.get(key, {}).get(m.metric), rules))
        for (key, m), p in zip(flat, adjusted, strict=True)
    )  # fmt: skip
    decisions = {}
    for key, metrics in results.items():
        stage = _stage_of(key)
        stage_metrics = tuple(next(decided) for _ in metrics)
        best = {m.metric: baselines[key][m.metric] for m in stage_metrics
                if m.metric in baselines.get(key, {})}  # fmt: skip
        verdict, reasons = _verdict(stage_metrics, best, rules)
        decisions[key] = GateDecision(
            stage=stage,
            verdict=verdict,
            reasons=reasons,
            metrics=stage_metrics,
            alpha=alpha,
            min_effect=min_effect,
            max_regression=max_regression,
            min_tasks=min_tasks,
            n_tasks=min((m.n for m in stage_metrics), default=0),
            baselines=best,
        )
    return decisions


def _stage_of(key: Key) -> str:
    return key if isinstance(key, str) else key[0]


def _check_rules(rules: _Rules) -> None:
    if not 0 < rules.alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1 (exclusive); got {rules.alpha}")
    if rules.min_effect < 0:
        raise ValueError(f"min_effect must be >= 0; got {rules.min_effect}")
    if not 0 <= rules.max_regression <= 1:
        raise ValueError(f"max_regression must be between 0 and 1; got {rules.max_regression}")
    if rules.min_tasks < 1:
        raise ValueError(f"min_tasks must be >= 1; got {rules.min_tasks}")


def _outcome(m: MetricResult, best: BaselineScore | None, rules: _Rules) -> str:
    """improved | no better than a baseline | regressed | not shown non-inferior |
    unchanged: non-inferiority first (the interval of the difference must stay above
    −max_regression); a fall is "regressed" only when it is significant."""
    if m.delta_interval[0] < -rules.max_regression:
        fell = m.p_adjusted < rules.alpha and m.delta < 0
        return "regressed" if fell else NOT_NON_INFERIOR
    if m.p_adjusted < rules.alpha and m.delta >= rules.min_effect:
        if best is not None and m.candidate - best.value < rules.min_effect:
            return "no better than a baseline"
        return "improved"
    return "unchanged"


def _verdict(
    metrics: tuple[MetricResult, ...], best: Mapping[str, BaselineScore], rules: _Rules
) -> tuple[Verdict, tuple[str, ...]]:
    how = ("add eval packages, raise evaluation.holdout_fraction, or ingest more commits "
           "of the packages")  # fmt: skip
    if not metrics:
        return "insufficient", (
            f"no task was compared (n = 0; min_tasks {rules.min_tasks}): {how}",
        )
    few = [m for m in metrics if m.n < rules.min_tasks]
    if few:
        return "insufficient", tuple(
            f"{m.metric}: only n = {m.n} tasks compared, fewer than min_tasks "
            f"{rules.min_tasks}: {how}"
            for m in few
        )
    regressed = [m for m in metrics if m.outcome in ("regressed", NOT_NON_INFERIOR)]
    improved = [m for m in metrics if m.outcome == "improved"]
    # A significant fall inside the margin passes, but is named.
    tolerated = [
        f"{_change(m, 'fell')}, within the margin {rules.max_regression:g}"
        for m in metrics
        if m.outcome == "unchanged" and m.p_adjusted < rules.alpha and m.delta < 0
    ]
    if improved and not regressed:
        return "promote", (
            *(_change(m, "improved") + _beats(best.get(m.metric)) for m in improved),
            f"no metric's interval of the difference reaches below −{rules.max_regression:g}",
            *tolerated,
        )
    reasons = [_fell(m, rules) for m in regressed]
    if any(m.outcome == "no better than a baseline" for m in metrics) and not improved:
        reasons.append("no metric improved on both the active version and the best baseline")
    elif not improved:
        reasons.append("no metric improved significantly (tie)")
    reasons += tolerated
    reasons += [
        f"{_change(m, 'rose')}, but the baseline “{best[m.metric].name}” scores "
        f"{_num(best[m.metric].value)}, the candidate {_num(m.candidate)} (less than "
        f"{rules.min_effect:g} above it)"
        for m in metrics
        if m.outcome == "no better than a baseline"
    ]
    # A significant gain too small to count is worth naming: it is not a plain tie.
    reasons += [
        f"{_change(m, 'rose')}, below the minimum effect {rules.min_effect:g}"
        for m in metrics
        if m.outcome == "unchanged" and m.p_adjusted < rules.alpha and m.delta > 0
    ]
    return "reject", tuple(reasons)


def _fell(m: MetricResult, rules: _Rules) -> str:
    low = _num(m.delta_interval[0]).replace("-", "−")
    if m.outcome == "regressed":
        return f"{_change(m, 'regressed')}: a significant fall (interval low {low})"
    return (
        f"{_change(m, 'went')}: not a significant fall, but a drop of more than "
        f"{rules.max_regression:g} cannot be ruled out (interval low {low}): "
        "non-inferiority not shown"
    )


def _beats(best: BaselineScore | None) -> str:
    if best is None:
        return ""
    return f"; the best baseline “{best.name}” scores {_num(best.value)}"


def _change(m: MetricResult, word: str) -> str:
    return (
        f"{m.metric} {word}: {_num(m.baseline)} → {_num(m.candidate)} "
        f"(Δ {_signed(m.delta)}, p = {_num(m.p_value)}, adjusted p = {_num(m.p_adjusted)}, "
        f"n = {m.n} {m.unit}s)"
    )


def _metric_line(m: MetricResult, best: BaselineScore | None = None) -> str:
    beside = f"best baseline “{best.name}” {_num(best.value)}; " if best else ""
    return (
        f"{m.stage}/{m.metric} ({m.kind}, n={m.n} {m.unit}s): "
        f"candidate {_num(m.candidate)} {_interval(m.candidate_interval)} vs "
        f"active {_num(m.baseline)} {_interval(m.baseline_interval)}; {beside}"
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
