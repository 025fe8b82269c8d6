"""Training rows from campaign data, with their provenance.

SFT rows are the messages exactly as a stage's model saw them (from the call log) and
the answer to learn: the answer of a sample that resolved its task, or the real commit's
answer (its synthetic pair). DPO rows pair answers to the same prompt of the same task:
a resolved sample's answer (or, failing that, the real commit's, or a sample much better
aligned with the real commit) over a worse sample's. Rows never pair across tasks.

A row is a frozen `DatasetRow` from here to the trainer's input; triples and synthetic
pairs come from appliance.campaign.store, the logged calls from appliance.serving.calllog.
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from appliance.campaign import store as campaign_store
from appliance.campaign import targets
from appliance.config import FORGE_ROOT
from appliance.packages import corpus
from appliance.records import as_json
from appliance.serving import calllog
from appliance.serving.calllog import ModelCall

GOOD = "resolved"
# infra says nothing about the answers. A tampered answer (its run rewrote what its tests
# said) is a rejected side only: never an SFT row, never chosen, not even over another.
# So is a resolved answer that edited test infrastructure (grading's flags: conftest,
# startup hooks, pytest configuration or internals): resolving that way must not be learned.
FLAGGED = "resolved_flagged"
BAD = ("failed", "not_applied", "tampered", FLAGGED)
REJECTED_ONLY = ("tampered", FLAGGED)
ALIGNMENT_MARGIN = 0.5
# DPO sources whose preference the harness decided (a critic is calibrated on them).
RESOLVED_OVER = "resolved over not resolved"
REAL_OVER = "real commit over sample"
HARNESS_DECIDED = (RESOLVED_OVER, REAL_OVER)


@functools.cache
def forge_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(FORGE_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


CAMPAIGN = "campaign"  # the origin of rows made from this box's own campaigns


@dataclass(frozen=True)
class Provenance:
    """Where a row comes from: the task and sample, the logged call, base, adapter, code,
    and its origin: `campaign`; `operator` for a row from the operator's feedback on a solve
    run (its sample is the run); or `import:NAME-VERSION` for a data package's row (which
    has no call here: call_id None, the line of its STAGE.jsonl as its sample)."""

    task: str
    sample: int
    call_id: int | None
    base_sha256: str
    adapter: str | None
    forge_revision: str
    params: dict  # the call's generation parameters, as logged
    origin: str = CAMPAIGN

    def to_dict(self) -> dict:
        return as_json(self)


@dataclass(frozen=True)
class DatasetRow:
    """One SFT row (messages → completion) or DPO row (messages → chosen over rejected).

    `to_dict` / `from_dict` are the one conversion to and from the stored shape (a
    dataset_rows row and a line of the JSONL file)."""

    stage: str
    kind: str  # sft | dpo
    task: str  # NAME@SHA: rows never pair across tasks
    source: str  # why the row exists: "resolved sample", "real commit", ...
    messages: list  # the chat messages exactly as the model saw them
    prompt: str  # the rendered prompt the model received
    finish_reason: str
    provenance: Provenance
    completion: str | None = None  # sft
    chosen: str | None = None  # dpo
    rejected: str | None = None  # dpo

    @property
    def answer(self) -> str:
        """What training would teach: the completion, or the chosen answer."""
        return self.completion if self.kind == "sft" else self.chosen

    @property
    def key(self) -> str:
        """The row's identity for deduplication: stage, kind, prompt and answer(s)."""
        answer = [self.completion] if self.kind == "sft" else [self.chosen, self.rejected]
        data = json.dumps([self.stage, self.kind, self.prompt, *answer])
        return hashlib.sha256(data.encode()).hexdigest()

    def to_dict(self) -> dict:
        answer = ("completion",) if self.kind == "sft" else ("chosen", "rejected")
        keys = ("stage", "kind", "task", "source", "messages", "prompt", "finish_reason")
        return as_json(self, *keys, *answer, "provenance")

    @classmethod
    def from_dict(cls, data: dict) -> DatasetRow:
        return cls(
            stage=data["stage"],
            kind=data["kind"],
            task=data["task"],
            source=data["source"],
            messages=data["messages"],
            prompt=data["prompt"],
            finish_reason=data["finish_reason"],
            provenance=Provenance(**data["provenance"]),
            completion=data.get("completion"),
            chosen=data.get("chosen"),
            rejected=data.get("rejected"),
        )


@dataclass(frozen=True)
class _Attempt:
    """One sample's answer for the stage: its call, how it did, how well it aligned."""

    sample: int
    outcome: str
    call_id: int
    alignment: float
    real: str | None = None  # the real commit's answer to this call's own prompt, if known


def _alignment_score(alignment: dict) -> float:
    parts = [alignment.get(k, {}).get("recall") for k in ("plan_files", "edit_files")]
    known = [p for p in parts if p is not None]
    return sum(known) / len(known) if known else 0.0


def candidate_rows(
    db, stage: str, trainable: Callable[[str, str | None, str], bool]
) -> list[DatasetRow]:
    """Every SFT and DPO row the campaign data implies for `stage`, best sources first
    within each task (the per-task cap keeps the first ones). `trainable(name, split, sha)`
    says whether a commit of package `name` may be trained on: eval packages and held-out
    commits may not (`Holdout.trainable`)."""
    by_task, calls = _attempts(db, stage, trainable)
    rows = []
    for (_, name, sha), attempts in by_task.items():
        rows.extend(_task_rows(stage, f"{name}@{sha}", attempts, calls, real=None))
    return rows


@dataclass(frozen=True)
class UndecidedPair:
    """Two answers to one prompt that the harness cannot tell apart: neither sample
    resolved its task, neither is a rejected-only answer, and their alignment with the
    real commit differs by less than ALIGNMENT_MARGIN. A critic may label them."""

    stage: str
    task: str
    messages: list
    prompt: str
    first: ModelCall
    second: ModelCall
    samples: tuple[int, int]


def undecided_pairs(
    db, stage: str, trainable: Callable[[str, str | None, str], bool]
) -> list[UndecidedPair]:
    """Every pair of different answers to the same prompt (the same logged prompt text)
    in one task that the harness cannot tell apart (`UndecidedPair`), in task order."""
    by_task, calls = _attempts(db, stage, trainable)
    pairs = []
    for (_, name, sha), attempts in by_task.items():
        open_ = [
            a for a in attempts
            if a.call_id in calls and a.outcome in BAD and a.outcome not in REJECTED_ONLY
        ]  # fmt: skip
        for i, a in enumerate(open_):
            for b in open_[i + 1 :]:
                x, y = calls[a.call_id], calls[b.call_id]
                if (
                    x.prompt == y.prompt
                    and x.output != y.output
                    and abs(a.alignment - b.alignment) < ALIGNMENT_MARGIN
                ):
                    pairs.append(UndecidedPair(stage, f"{name}@{sha}", x.messages, x.prompt,
                                               x, y, (a.sample, b.sample)))  # fmt: skip
    return pairs


def _attempts(db, stage: str, trainable) -> tuple[dict[tuple, list[_Attempt]], dict]:
    """(task → the samples' attempts at `stage`, call id → its logged call) over the
    trainable commits of the train packages' campaigns."""
    packages = sorted((p for p in corpus.packages(db) if p.split != "eval"), key=lambda p: p.id)
    by_task: dict[tuple, list[_Attempt]] = defaultdict(list)
    for package in packages:
        package_id, name = package.id, package.name
        pairs: dict[str, campaign_store.SyntheticPair | None] = {}
        for triple in campaign_store.triples(db, package_id):
            if not trainable(name, package.split, triple.sha):
                continue
            outcome = triple.outcome
            if outcome == GOOD and triple.grading.get("flags"):
                outcome = FLAGGED
            result = triple.stage(stage)
            if result is None or result.call_id is None:
                continue
            if triple.sha not in pairs:
                pairs[triple.sha] = campaign_store.synthetic_pair(db, package_id, triple.sha, stage)
            by_task[(package_id, name, triple.sha)].append(
                _Attempt(triple.sample, outcome, result.call_id, _alignment_score(triple.alignment),
                         real_answer(stage, pairs[triple.sha], result.context))
            )  # fmt: skip
    calls = calllog.calls(db, [a.call_id for attempts in by_task.values() for a in attempts])
    # A served call is a client's, never training data, even if a record pointed at one.
    calls = {i: call for i, call in calls.items() if call.source != calllog.SERVED}
    return by_task, calls


def real_answer(stage: str, pair: campaign_store.SyntheticPair | None, context: dict) -> str | None:
    """The real commit's answer (JSON) to one call's prompt. Scope and precision label
    exactly what the call showed (its context's paths, its listed symbol ids), so the
    answer never names an item the prompt did not list; the other stages' prompts ask for
    no list, so their answer is the pair's target. None: nothing to answer with."""
    if pair is None:
        return None
    if stage not in ("scope", "precision"):
        return json.dumps(pair.target)
    items = [i for i in context.get("items", []) if isinstance(i, dict) and i.get("path")]
    if stage == "scope":
        shown = list(dict.fromkeys(i["path"] for i in items))
    else:  # a precision item's text starts "path::qualname: signature"
        shown = list(dict.fromkeys(i.get("text", "").split(": ", 1)[0] for i in items))
    if not shown:
        return None
    given = pair.input
    if stage == "scope" and "real_files" in given:
        # supporting: found through imports by the record-time retrieval or by this call's
        supporting = set(given.get("supporting", [])) | targets.supporting_files(
            (i["path"], i.get("why", "")) for i in items
        )
        return json.dumps(targets.scope_target(given["real_files"], shown, supporting))
    if stage == "precision" and "real_symbols" in given:
        return json.dumps(targets.precision_target(given["real_symbols"], shown))
    # A pair recorded before it kept the commit's facts: its stored labels, restricted to
    # the shown items; a shown item it never labelled is irrelevant (scope) or excluded.
    key, items_key, default = (
        ("path", "files", "irrelevant") if stage == "scope" else ("symbol", "symbols", "excluded")
    )
    labels = {e[key]: e["label"] for e in pair.target.get(items_key, []) if isinstance(e, dict)}
    return json.dumps({items_key: [{key: k, "label": labels.get(k, default)} for k in shown]})


def _row(stage, kind, task, call: ModelCall, attempt: _Attempt, source, **answer) -> DatasetRow:
    return DatasetRow(
        stage=stage,
        kind=kind,
        task=task,
        source=source,
        messages=call.messages,
        prompt=call.prompt,
        finish_reason=answer.pop("finish_reason", "stop"),
        provenance=Provenance(
            task=task,
            sample=attempt.sample,
            call_id=call.id,
            base_sha256=call.base_sha256,
            adapter=call.adapter,
            forge_revision=forge_revision(),
            params=call.params,
        ),
        **answer,
    )


def _task_rows(
    stage, task, attempts: list[_Attempt], calls: dict[int, ModelCall], real: str | None
) -> list[DatasetRow]:
    """The rows of one task. The real commit's answer to an attempt's prompt is its own
    `real` (scope, precision: it labels what that prompt showed), else `real`."""
    attempts = [a for a in attempts if a.call_id in calls]
    good = [a for a in attempts if a.outcome == GOOD]
    bad = [a for a in attempts if a.outcome in BAD]
    real_for = {a.call_id: a.real if a.real is not None else real for a in attempts}
    rows = []
    for a in good:  # what worked, as the model saw it
        call = calls[a.call_id]
        rows.append(
            _row(stage, "sft", task, call, a, "resolved sample", completion=call.output,
                 finish_reason=call.finish_reason)
        )  # fmt: skip
    first = next((a for a in attempts if real_for[a.call_id] is not None), None)
    if first is not None:  # the real commit's answer, in a context a model saw
        rows.append(_row(stage, "sft", task, calls[first.call_id], first, "real commit",
                         completion=real_for[first.call_id]))  # fmt: skip
    for a in bad:
        call = calls[a.call_id]
        if good:
            chosen, source = calls[good[0].call_id].output, RESOLVED_OVER
        elif real_for[a.call_id] is not None:
            chosen, source = real_for[a.call_id], REAL_OVER
        else:
            continue
        if chosen != call.output:
            rows.append(_row(stage, "dpo", task, call, a, source, chosen=chosen,
                             rejected=call.output))  # fmt: skip
    ranked = sorted((a for a in bad if a.outcome not in REJECTED_ONLY), key=lambda a: -a.alignment)
    if not good and len(ranked) >= 2:
        top, low = ranked[0], ranked[-1]
        if top.alignment - low.alignment >= ALIGNMENT_MARGIN:
            chosen, rejected = calls[top.call_id].output, calls[low.call_id].output
            if chosen != rejected:
                source = "better aligned sample"
                call = calls[low.call_id]
                rows.append(
                    _row(stage, "dpo", task, call, low, source, chosen=chosen, rejected=rejected)
                )
    return rows
