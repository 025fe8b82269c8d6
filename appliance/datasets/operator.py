"""Training rows from the operator's feedback on solve runs (`forge feedback`).

Runs of one task text on one snapshot are one task (`solve.runs.task_key`). Per stage,
as the stage's model saw it (the messages and prompt from the call log):

- a run given a corrected patch: SFT, the patch's answer to that call's own prompt
  (scope and precision label exactly the files or symbols the prompt listed, as the real
  commit's rows do: `rows.real_answer`);
- a good run without a patch: SFT, the run's own answer (a stage whose answer was
  unusable gives none);
- a bad run: DPO, its answer rejected, and chosen the corrected patch's answer to the
  same prompt (its own patch first, then another run's of the task), else a good run's
  answer to the very same prompt; with neither, no row (the verdict waits for one).

Every row's provenance has origin "operator" and the run as its sample. A run whose
rows may not be trained on now (`solve.leak`: its snapshot holds a held-out commit, or
its package is eval) gives no row; it is listed as held back, with the reason, and the
dataset version records that list.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlite_utils

from appliance.campaign.store import StageRecord, SyntheticPair
from appliance.config import Config
from appliance.datasets.rows import DatasetRow, Provenance, forge_revision, real_answer
from appliance.packages import corpus
from appliance.packages.split import Holdout
from appliance.records import as_json
from appliance.serving import calllog
from appliance.serving.calllog import ModelCall
from appliance.solve import leak
from appliance.solve import runs as solve_runs
from appliance.solve.runs import SolveRun

ORIGIN = "operator"


@dataclass(frozen=True)
class HeldBack:
    """A run the operator gave feedback on whose rows may not enter a dataset now."""

    run: int
    task: str  # its task key
    reason: str

    def to_dict(self) -> dict:
        return as_json(self)


@dataclass(frozen=True)
class OperatorRows:
    rows: tuple[DatasetRow, ...]
    held_back: tuple[HeldBack, ...]

    def untrainable(self, task: str) -> bool:
        """Whether rows of operator task `task` may not be in a dataset now."""
        return any(h.task == task for h in self.held_back)


@dataclass(frozen=True)
class _Answer:
    run: SolveRun
    record: StageRecord
    call: ModelCall


def operator_rows(
    config: Config, db: sqlite_utils.Database, stage: str, holdout: Holdout
) -> OperatorRows:
    """Every row the operator's feedback implies for `stage`, and the runs held back."""
    names = {p.id: p.name for p in corpus.packages(db)}
    tasks: dict[str, list[SolveRun]] = {}
    held_back = []
    for run in solve_runs.with_feedback(db):
        if run.package_id not in names:
            continue
        key = solve_runs.task_key(names[run.package_id], run.snapshot_sha, run.task)
        reason = leak.untrainable_reason(config, db, run, holdout)
        if reason is not None:
            held_back.append(HeldBack(run.id, key, reason))
            continue
        tasks.setdefault(key, []).append(run)
    calls = calllog.calls(
        db, [i for group in tasks.values() for run in group for i in run.call_ids]
    )
    rows = []
    for key, group in tasks.items():
        answers = []
        for run in group:
            record = run.stage(stage)
            if record is not None and record.call_id in calls:
                answers.append(_Answer(run, record, calls[record.call_id]))
        rows.extend(_task_rows(stage, key, answers))
    return OperatorRows(tuple(rows), tuple(held_back))


def _patch_answer(stage: str, patched: SolveRun, asked: _Answer) -> str | None:
    """The corrected patch of run `patched`, as the answer to `asked`'s prompt."""
    given = (patched.feedback_targets or {}).get(stage)
    if not isinstance(given, dict):
        return None
    pair = SyntheticPair(
        patched.package_id, patched.snapshot_sha, stage, given["input"], given["target"]
    )
    return real_answer(stage, pair, asked.record.context)


def _task_rows(stage: str, key: str, answers: list[_Answer]) -> list[DatasetRow]:
    patched = [a for a in answers if a.run.feedback_targets]
    good = [
        a for a in answers
        if a.run.feedback == "good" and not a.run.feedback_targets
        and a.record.error is None and a.record.output is not None
    ]  # fmt: skip
    rows = []
    for a in patched:
        answer = _patch_answer(stage, a.run, a)
        if answer is not None:
            rows.append(_row(stage, "sft", key, a, "operator: corrected patch", completion=answer))
    for a in good:
        rows.append(_row(stage, "sft", key, a, "operator: good run", completion=a.call.output,
                         finish_reason=a.call.finish_reason))  # fmt: skip
    for a in (a for a in answers if a.run.feedback == "bad"):
        chosen, source = None, None
        for p in sorted(patched, key=lambda p: p.run.id != a.run.id):  # its own patch first
            chosen = _patch_answer(stage, p.run, a)
            if chosen is not None:
                source = "operator: corrected patch over the run's answer"
                break
        if chosen is None:
            same = next((g for g in good if g.call.prompt == a.call.prompt), None)
            if same is not None:
                chosen, source = same.call.output, "operator: good run over bad run"
        if chosen is not None and chosen != a.call.output:
            rows.append(_row(stage, "dpo", key, a, source, chosen=chosen, rejected=a.call.output))
    return rows


def _row(stage, kind, key, answer: _Answer, source, **given) -> DatasetRow:
    call = answer.call
    return DatasetRow(
        stage=stage,
        kind=kind,
        task=key,
        source=source,
        messages=call.messages,
        prompt=call.prompt,
        finish_reason=given.pop("finish_reason", "stop"),
        provenance=Provenance(
            task=key,
            sample=answer.run.id,
            call_id=call.id,
            base_sha256=call.base_sha256,
            adapter=call.adapter,
            forge_revision=forge_revision(),
            params=call.params,
            origin=ORIGIN,
        ),
        **given,
    )
