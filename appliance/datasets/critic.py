"""A calibrated critic: the pool's single-token A/B `judge` labels the pairs of answers
the harness cannot tell apart (`rows.undecided_pairs`: neither sample resolved, their
alignment with the real commit is alike), but only once it has shown it agrees with the
harness where the harness knows the answer.

`calibrate_and_label(stage)`:

1. The judges are the distinct bases the pool serves (one per base, through a role that
   base serves). Each judges a pair in both orders (X as A, then X as B), so a judge that
   always says "A" scores 0.5, not 1; p(X) is the mean of the two probabilities, each the
   softmax of the two letters' log-probabilities.
2. The ensemble score of an answer is mean − λ·variance of the judges' p over it (the
   ICCM review's uncertainty-penalised reward; `datasets.critic_lambda`). It labels X
   over Y when X's score is at least `datasets.critic_min_score`, else nothing.
3. Calibration: the DPO pairs whose preference the harness decided (`rows.HARNESS_DECIDED`:
   a resolved answer, or the real commit's, over a sample that failed). The critic agrees
   on a pair when the ensemble scores the harness's choice above 0.5. Its agreement is a
   rate with a 95 % Wilson interval.
4. The undecided pairs are judged and their labels stored with the calibration.

`versions.build` takes `critic_rows`: the labels of the stage's newest calibration, as DPO
rows of origin `critic`, only when that calibration's Wilson lower bound is above
`datasets.min_critic_agreement` as configured now. This module owns the tables
critic_calibrations and critic_labels.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from statsmodels.stats.proportion import proportion_confint

from appliance.clock import now_iso
from appliance.config import Config
from appliance.datasets.rows import (
    HARNESS_DECIDED,
    DatasetRow,
    Provenance,
    candidate_rows,
    forge_revision,
    undecided_pairs,
)
from appliance.errors import UsageError
from appliance.models.manifest import read_manifest
from appliance.records import as_json, from_row
from appliance.serving import calllog
from appliance.store import transaction

if TYPE_CHECKING:  # the pool loads llama.cpp: dataset builds never need it
    from appliance.serving.pool import ModelPool

ORIGIN = "critic"
SOURCE = "critic label"
CONFIDENCE = 0.95
SYSTEM = (
    "You compare two answers to the same request and say which one is better: more "
    "correct, more complete, closer to what was asked. Reply with one letter, A or B."
)
QUESTION = "Which answer is better? Reply A or B."
ROOM = 8  # tokens kept free in the judge's context

Trainable = Callable[[str, str | None, str], bool]
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Pair:
    """Two answers (`first`, `second`) to one stage prompt, as the critic judges them."""

    stage: str
    task: str
    messages: list  # the stage prompt's messages
    first: str
    second: str
    better: str | None = None  # "first" when the harness decided it; None: undecided


@dataclass(frozen=True)
class Verdict:
    """The ensemble's view of one pair: each judge's p(first), the penalised scores."""

    p_first: tuple[float, ...]  # per judge
    score_first: float
    score_second: float
    label: str | None  # "first", "second", or None (no answer scores min_score)


@dataclass(frozen=True)
class Calibration:
    id: int
    stage: str
    judges: list  # base names
    lam: float
    min_score: float
    pairs: int  # harness-decided pairs judged
    agreed: int
    low: float
    high: float
    skipped: int  # pairs too long for a judge's context
    labelled: int  # undecided pairs given a label
    undecided: int  # undecided pairs judged
    created_at: str

    @property
    def rate(self) -> float | None:
        return self.agreed / self.pairs if self.pairs else None

    def usable(self, min_agreement: float) -> bool:
        """Whether its labels may enter a dataset: the Wilson lower bound of its agreement
        with the harness is above `min_agreement`."""
        return self.pairs > 0 and self.low > min_agreement

    def to_dict(self) -> dict:
        return as_json(self, rate=self.rate)


def ensemble(p_first: Sequence[float], lam: float, min_score: float) -> Verdict:
    """Scores mean − λ·variance (population) of each answer's judge probabilities."""
    n = len(p_first)
    mean = sum(p_first) / n
    variance = sum((p - mean) ** 2 for p in p_first) / n
    first, second = mean - lam * variance, (1 - mean) - lam * variance
    label = "first" if first >= min_score else "second" if second >= min_score else None
    return Verdict(tuple(p_first), first, second, label)


def wilson(agreed: int, n: int) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    low, high = proportion_confint(agreed, n, alpha=1 - CONFIDENCE, method="wilson")
    # Exactly 0 and 1 at the ends (statsmodels leaves rounding noise, and a lower bound
    # of 5e-17 over no agreement at all must not pass a threshold of 0).
    return (0.0 if agreed == 0 else float(low)), (1.0 if agreed == n else float(high))


def judge_roles(config: Config) -> list[str]:
    """One role per distinct base the pool serves: the judges of the ensemble."""
    manifest = read_manifest(config.models_manifest)
    roles: dict[str, str] = {}
    for role in sorted(manifest.roles):
        roles.setdefault(manifest.for_role(role).name, role)
    return [roles[name] for name in sorted(roles)]


def judge_messages(pair: Pair, a: str, b: str) -> list[dict]:
    request = "\n\n".join(
        f"[{m['role']}]\n{m['content']}" for m in pair.messages if m.get("content")
    )
    user = f"Request:\n{request}\n\nAnswer A:\n{a}\n\nAnswer B:\n{b}\n\n{QUESTION}"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def p_first(pool: ModelPool, role: str, pair: Pair) -> float | None:
    """The judge's probability that `pair.first` is the better answer, over both orders;
    None when the question does not fit the judge's context."""
    base = pool.base_for(role)
    asked = judge_messages(pair, pair.first, pair.second)
    if pool.count_tokens(role, json.dumps(asked)) > base.spec.context - ROOM:
        return None
    ab = pool.judge(role, asked)
    ba = pool.judge(role, judge_messages(pair, pair.second, pair.first))
    return (_p(ab.logprobs, "A") + _p(ba.logprobs, "B")) / 2


def _p(logprobs: dict[str, float], choice: str) -> float:
    top = max(logprobs.values())
    weights = {c: math.exp(v - top) for c, v in logprobs.items()}
    return weights[choice] / sum(weights.values())


def known_pairs(db, stage: str, trainable: Trainable) -> list[Pair]:
    """The DPO pairs of the campaigns whose preference the harness decided."""
    return [
        Pair(stage, r.task, r.messages, r.chosen, r.rejected, better="first")
        for r in candidate_rows(db, stage, trainable)
        if r.kind == "dpo" and r.source in HARNESS_DECIDED
    ]


def calibrate_and_label(
    config: Config,
    db,
    pool: ModelPool,
    stage: str,
    trainable: Trainable,
    *,
    max_pairs: int = 40,
    on_progress: Progress | None = None,
) -> Calibration:
    """Judge up to `max_pairs` harness-decided pairs (the calibration) and up to
    `max_pairs` undecided ones (the labels) of `stage`; store both; the calibration."""
    settings = config.settings.datasets
    lam, min_score = settings.critic_lambda, settings.critic_min_score
    roles = judge_roles(config)
    say = on_progress or (lambda text, done, total: None)
    known = _spread(known_pairs(db, stage, trainable), max_pairs)
    open_ = _spread(undecided_pairs(db, stage, trainable), max_pairs)
    if not known:
        raise UsageError(
            f"no pair of {stage} answers that the harness decided: nothing to calibrate on",
            "run a campaign first (forge campaign run PACKAGE)",
        )
    agreed, skipped, details = 0, 0, []
    for i, pair in enumerate(known, 1):
        say(f"{stage}: calibrating", i, len(known))
        verdict = _verdict(pool, roles, pair, lam, min_score)
        if verdict is None:
            skipped += 1
            continue
        agrees = sum(verdict.p_first) / len(verdict.p_first) > 0.5
        agreed += agrees
        details.append({"task": pair.task, "p_first": verdict.p_first, "agrees": agrees})
    judged = len(known) - skipped
    labels = []
    for i, undecided in enumerate(open_, 1):
        say(f"{stage}: labelling", i, len(open_))
        pair = Pair(stage, undecided.task, undecided.messages,
                    undecided.first.output, undecided.second.output)  # fmt: skip
        verdict = _verdict(pool, roles, pair, lam, min_score)
        if verdict is None:
            skipped += 1
            continue
        labels.append((undecided, verdict))
    low, high = wilson(agreed, judged)
    bases = [pool.base_for(role).spec.name for role in roles]
    return _store(db, stage, bases, lam, min_score, judged, agreed, low, high, skipped,
                  labels, details)  # fmt: skip


def _spread(items: list, limit: int) -> list:
    """At most `limit` items, taken evenly over the list (so over all tasks)."""
    if len(items) <= limit:
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def _verdict(pool, roles, pair: Pair, lam: float, min_score: float) -> Verdict | None:
    ps = [p_first(pool, role, pair) for role in roles]
    if any(p is None for p in ps):
        return None
    return ensemble(ps, lam, min_score)


def _store(db, stage, bases, lam, min_score, judged, agreed, low, high, skipped, labels,
           details) -> Calibration:  # fmt: skip
    now = now_iso()
    labelled = sum(v.label is not None for _, v in labels)
    with transaction(db) as conn:
        cursor = conn.execute(
            "INSERT INTO critic_calibrations (stage, judges, lam, min_score, pairs, agreed, "
            "low, high, skipped, labelled, undecided, details, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [stage, json.dumps(bases), lam, min_score, judged, agreed, low, high, skipped,
             labelled, len(labels), json.dumps(details), now],
        )  # fmt: skip
        calibration_id = cursor.lastrowid
        for pair, verdict in labels:
            conn.execute(
                "INSERT INTO critic_labels (calibration_id, stage, task, first_call_id, "
                "second_call_id, first_sample, second_sample, p_first, score_first, "
                "score_second, label) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [calibration_id, stage, pair.task, pair.first.id, pair.second.id,
                 pair.samples[0], pair.samples[1], json.dumps(verdict.p_first),
                 verdict.score_first, verdict.score_second, verdict.label],
            )  # fmt: skip
    return latest(db, stage)


_COLUMNS = (
    "id, stage, judges, lam, min_score, pairs, agreed, low, high, skipped, labelled, "
    "undecided, created_at"
)


def latest(db, stage: str) -> Calibration | None:
    """The stage's newest calibration, or None."""
    for row in db.query(
        f"SELECT {_COLUMNS} FROM critic_calibrations WHERE stage = ? ORDER BY id DESC LIMIT 1",
        [stage],
    ):
        return from_row(Calibration, row, json_columns=("judges",))
    return None


def critic_rows(config: Config, db, stage: str, trainable: Trainable) -> list[DatasetRow]:
    """The labels of the stage's newest calibration as DPO rows (origin `critic`), when
    that calibration is usable under `datasets.min_critic_agreement`; else none."""
    calibration = latest(db, stage)
    if calibration is None or not calibration.usable(config.settings.datasets.min_critic_agreement):
        return []
    labelled = db.execute(
        "SELECT task, first_call_id, second_call_id, first_sample, second_sample, label "
        "FROM critic_labels WHERE calibration_id = ? AND label IS NOT NULL ORDER BY id",
        [calibration.id],
    ).fetchall()
    calls = calllog.calls(db, [i for row in labelled for i in row[1:3]])
    rows = []
    for task, first_id, second_id, first_sample, second_sample, label in labelled:
        name, _, sha = task.partition("@")
        if first_id not in calls or second_id not in calls or not trainable(name, None, sha):
            continue
        chosen, rejected = calls[first_id], calls[second_id]
        sample = second_sample
        if label == "second":
            chosen, rejected, sample = rejected, chosen, first_sample
        rows.append(_row(stage, task, calibration, chosen.output, rejected, sample))
    return rows


def _row(stage, task, calibration: Calibration, chosen: str, rejected, sample) -> DatasetRow:
    return DatasetRow(
        stage=stage,
        kind="dpo",
        task=task,
        source=SOURCE,
        messages=rejected.messages,
        prompt=rejected.prompt,
        finish_reason="stop",
        chosen=chosen,
        rejected=rejected.output,
        provenance=Provenance(
            task=task,
            sample=sample,
            call_id=rejected.id,
            base_sha256=rejected.base_sha256,
            adapter=rejected.adapter,
            forge_revision=forge_revision(),
            params={**rejected.params, "critic_calibration": calibration.id},
            origin=ORIGIN,
        ),
    )
