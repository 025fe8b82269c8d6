"""Per-stage evaluation examples with ground truth from the real commits.

Each stage is evaluated on its own, teacher-forced: its input is built from what the real
commit says the earlier stages should have produced (the same synthetic pairs training
learns from), so that a metric moves only with the adapter under test. The context is
built by the same ContextBuilder the pipeline uses, from the index of the parent commit:
nothing after the parent is visible.

Scope and precision examples are label-blind: the candidates come from the retrieval
without hints (the real files it missed are added with the same neutral why text) and are
listed in an order seeded by the task's key, so neither position nor wording tells which
items the commit changed; the target labels exactly the items the prompt shows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from appliance import index
from appliance.campaign import targets, truth
from appliance.harness.spec import CommitSpec
from appliance.packages import corpus
from appliance.stages import STAGE_ROLES, schemas
from appliance.stages.context import ContextBuilder, ContextPackage

GRADED = ("plan", "code")  # stages judged by the harness: the edits must resolve the task


@dataclass(frozen=True)
class Example:
    stage: str
    key: str  # the task, "name@sha": pairs a candidate's outcome with the active one's
    spec: CommitSpec
    context: ContextPackage
    schema: dict
    target: dict  # the real commit's answer for this stage
    # the stage's structured input: "task" and what the prompt lists (scope: "candidates"
    # in prompt order and "retrieval_rank" {path: rank without hints, absent if inserted};
    # precision: "symbols"; task_analysis: "retrieved"; plan/code: "files")
    input: dict = field(default_factory=dict)
    fields: dict = field(default_factory=dict)  # more template fields (the plan, for code)
    # plan only: how the code stage that follows the plan gets its context
    code_files: tuple[str, ...] = ()
    primary: tuple[str, ...] = ()


class CommitExamples:
    """The examples one evaluation commit yields, one per stage, built on demand."""

    def __init__(self, db, pool, spec: CommitSpec, budget) -> None:
        self.spec = spec
        package = corpus.package_by_id(db, spec.package_id)
        self.key = targets.task_key(package.name if package else spec.package, spec.sha)
        self.snapshot = index.index_commit(db, spec.repo, spec.parent, package_id=spec.package_id)
        self.builder = ContextBuilder(
            db, self.snapshot, lambda text: pool.count_tokens(STAGE_ROLES["scope"], text)
        )
        self.budget = budget  # stage -> token budget of its context package
        self.real = truth.commit_truth(spec)
        self.present = [p for p in self.real.files if p in self.builder.files]
        # the retrieval alone: a hint would be the answer, listed first
        self.retrieved = self.builder.candidates(spec.message)
        self.pairs = truth.synthetic_pairs(
            spec, self.real, self.retrieved, [], set(self.builder.files)
        )

    def example(self, stage: str) -> Example | None:
        """The example for `stage`, or None when the commit gives that stage nothing to be
        judged on (no file at the parent to scope, no symbol to pick)."""
        b, task, target = self.builder, self.spec.message, self.pairs[stage][1]
        if stage == "task_analysis":
            if not self.real.files:
                return None
            context = b.task_analysis(task, self.budget(stage))
            retrieved = [p for p, _ in self.retrieved]
            return Example(stage, self.key, self.spec, context, schemas.task_analysis(), target,
                           input={"task": task, "retrieved": retrieved})  # fmt: skip
        if stage == "scope":
            return self._scope() if self.present else None
        if stage == "precision":
            return self._precision()
        primary = tuple(self.real.symbols)
        if not self.present:
            return None
        files = {"task": task, "files": list(self.present)}
        if stage == "plan":
            context = b.source("plan", self.present, primary, self.budget(stage))
            return Example(stage, self.key, self.spec, context, schemas.plan(), target,
                           input=files, code_files=tuple(self.present),
                           primary=primary)  # fmt: skip
        if stage == "code":
            context = b.source("code", self.present, primary, self.budget(stage))
            plan = json.dumps(self.pairs["plan"][1], indent=1)
            return Example(stage, self.key, self.spec, context, schemas.code(), target,
                           input=files, fields={"plan": plan})  # fmt: skip
        raise ValueError(f"unknown stage {stage!r}")

    def _scope(self) -> Example | None:
        candidates = targets.scope_candidates(self.retrieved, self.present, self.key)
        context = self.builder.scope(candidates, self.budget("scope"))
        shown = context.paths  # what the prompt lists, in its order; the budget may cut
        supporting = targets.supporting_files(self.retrieved)
        target = targets.scope_target(self.real.files, shown, supporting)
        if not any(f["label"] == "relevant" for f in target["files"]):
            return None  # the budget cut every relevant file: nothing to recall
        rank = {}
        for i, (path, _) in enumerate(self.retrieved):
            rank.setdefault(path, i)
        given = {"task": self.spec.message, "candidates": shown,
                 "retrieval_rank": {p: rank[p] for p in shown if p in rank}}  # fmt: skip
        return Example("scope", self.key, self.spec, context, schemas.scope(shown), target,
                       input=given)  # fmt: skip

    def _precision(self) -> Example | None:
        context, ids = self.builder.precision(
            self.present,
            self.budget("precision"),
            lambda items: targets.label_blind(items, self.key),
        )
        target = targets.precision_target(self.real.symbols, ids)
        if not any(s["label"] == "primary" for s in target["symbols"]):
            return None
        return Example("precision", self.key, self.spec, context, schemas.precision(ids), target,
                       input={"task": self.spec.message, "symbols": ids})  # fmt: skip
