"""Per-stage evaluation examples with ground truth from the real commits.

Each stage is evaluated on its own, teacher-forced: its input is built from what the real
commit says the earlier stages should have produced (the same synthetic pairs training
learns from), so that a metric moves only with the adapter under test. The context is
built by the same ContextBuilder the pipeline uses, from the index of the parent commit:
nothing after the parent is visible.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from appliance import index
from appliance.campaign import truth
from appliance.harness.spec import CommitSpec
from appliance.stages import STAGE_ROLES, schemas
from appliance.stages.context import ContextBuilder, ContextPackage

GRADED = ("plan", "code")  # stages judged by the harness: the edits must resolve the task


@dataclass(frozen=True)
class Example:
    stage: str
    key: str  # "package@sha": pairs a candidate's outcome with the baseline's
    spec: CommitSpec
    context: ContextPackage
    schema: dict
    target: dict  # the real commit's answer for this stage
    fields: dict = field(default_factory=dict)  # more template fields (the plan, for code)
    # plan only: how the code stage that follows the plan gets its context
    code_files: tuple[str, ...] = ()
    primary: tuple[str, ...] = ()


class CommitExamples:
    """The examples one evaluation commit yields, one per stage, built on demand."""

    def __init__(self, db, pool, spec: CommitSpec, budget) -> None:
        self.spec = spec
        self.snapshot = index.index_commit(db, spec.repo, spec.parent, package_id=spec.package_id)
        self.builder = ContextBuilder(
            db, self.snapshot, lambda text: pool.count_tokens(STAGE_ROLES["scope"], text)
        )
        self.budget = budget  # stage -> token budget of its context package
        self.real = truth.commit_truth(spec)
        present = [p for p in self.real.files if p in self.builder.files]
        self.present = present
        self.candidates = self.builder.candidates(spec.message, hints=present)
        symbol_ids = [
            f"{s.path}::{s.qualname}"
            for s in index.symbols(db, self.snapshot.id, [p for p, _ in self.candidates])
        ]
        self.pairs = truth.synthetic_pairs(
            spec, self.real, self.candidates, symbol_ids, set(self.builder.files)
        )
        self.key = f"{spec.package}@{spec.sha}"

    def example(self, stage: str) -> Example | None:
        """The example for `stage`, or None when the commit gives that stage nothing to be
        judged on (no file at the parent to scope, no symbol to pick)."""
        b, task, target = self.builder, self.spec.message, self.pairs[stage][1]
        if stage == "task_analysis":
            if not self.real.files:
                return None
            context = b.task_analysis(task, self.budget(stage))
            return Example(stage, self.key, self.spec, context, schemas.task_analysis(), target)
        if stage == "scope":
            if not self.present:
                return None
            labelled = [f["path"] for f in target["files"]]
            candidates = [(p, why) for p, why in self.candidates if p in labelled]
            known = dict(candidates)
            candidates += [(p, "changed by the task") for p in labelled if p not in known]
            context = b.scope(candidates, self.budget(stage))
            shown = set(context.paths)
            target = {"files": [f for f in target["files"] if f["path"] in shown]}
            if not any(f["label"] == "relevant" for f in target["files"]):
                return None  # the budget cut every relevant file: nothing to recall
            paths = [f["path"] for f in target["files"]]
            return Example(stage, self.key, self.spec, context, schemas.scope(paths), target)
        if stage == "precision":
            context, ids = b.precision(self.present, self.budget(stage))
            shown = set(ids)
            target = {"symbols": [s for s in target["symbols"] if s["symbol"] in shown]}
            if not any(s["label"] == "primary" for s in target["symbols"]):
                return None
            return Example(stage, self.key, self.spec, context, schemas.precision(ids), target)
        primary = tuple(self.real.symbols)
        if stage == "plan":
            if not self.present:
                return None
            context = b.source("plan", self.present, primary, self.budget(stage))
            return Example(stage, self.key, self.spec, context, schemas.plan(), target,
                           code_files=tuple(self.present), primary=primary)  # fmt: skip
        if stage == "code":
            if not self.present:
                return None
            context = b.source("code", self.present, primary, self.budget(stage))
            plan = json.dumps(self.pairs["plan"][1], indent=1)
            return Example(stage, self.key, self.spec, context, schemas.code(), target,
                           fields={"plan": plan})  # fmt: skip
        raise ValueError(f"unknown stage {stage!r}")
