"""Evaluate one adapter version (or the bare base) of a stage on the evaluation examples.

Decoding is deterministic (temperature 0, a fixed seed), so the candidate and the
baseline answer the same prompts under the same rules. Plan and code are judged by the
harness: the answer's edits (for plan, the edits the code stage writes from the plan,
with the code stage's active adapter) must resolve the task in the sandbox.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from appliance.config import FORGE_ROOT, Config
from appliance.evaluation import metrics
from appliance.evaluation import store as records
from appliance.evaluation.examples import GRADED, CommitExamples, Example
from appliance.evaluation.heldout import EvaluationSet
from appliance.harness.edits import SearchReplace
from appliance.harness.grading import grade_patch
from appliance.harness.results import gold_for
from appliance.registry import active_adapter
from appliance.serving.pool import Adapter, ModelPool
from appliance.stages import STAGE_ROLES, schemas
from appliance.stages.pipeline import StageResult, StageSettings, _budget, run_stages
from appliance.stages.templates import messages

BASE = "base"


@dataclass(frozen=True)
class Arm:
    """What is evaluated: an adapter version, or the base (adapter None)."""

    name: str  # scope-v2, or "base"
    adapter: Adapter | None
    sha256: str  # the adapter file's, or the base's

    @classmethod
    def of(cls, config: Config, pool: ModelPool, stage: str, version) -> Arm:
        if version is None:
            return cls(BASE, None, pool.manifest.for_role(STAGE_ROLES[stage]).sha256)
        return cls(version.name, Adapter(version.name, config.home / version.path), version.sha256)


@dataclass(frozen=True)
class EvalRun:
    id: int
    stage: str
    arm: str
    source: str
    summary: dict
    reused: bool


def settings_for(config: Config) -> StageSettings:
    # The context as campaigns build it (what training saw), and room for a whole answer:
    # an answer cut at the token limit is unusable and would score nothing.
    evaluation = config.settings.evaluation
    return StageSettings(
        temperature=0.0,
        seed=evaluation.seed,
        max_tokens=max(evaluation.max_tokens, config.settings.campaign.max_tokens),
        context_tokens=config.settings.campaign.context_tokens,
    )


def examples_key(stage: str, keys: list[str], settings: StageSettings) -> str:
    prompts = (FORGE_ROOT / "appliance" / "stages" / "prompts.toml").read_bytes()
    data = json.dumps([stage, sorted(keys), settings.__dict__, hashlib.sha256(prompts).hexdigest()])
    return hashlib.sha256(data.encode()).hexdigest()[:32]


class Evaluator:
    """Examples built once per commit (the index and the truth), shared by every arm."""

    def __init__(self, config: Config, db, pool: ModelPool, evaluation_set: EvaluationSet):
        self.config, self.db, self.pool, self.set = config, db, pool, evaluation_set
        self.settings = settings_for(config)
        self._commits: dict[str, CommitExamples] = {}
        self._examples: dict[str, list[Example]] = {}

    def commit(self, spec) -> CommitExamples:
        if spec.sha not in self._commits:
            self._commits[spec.sha] = CommitExamples(
                self.db, self.pool, spec, lambda stage: _budget(self.pool, stage, self.settings)
            )
        return self._commits[spec.sha]

    def examples(self, stage: str) -> list[Example]:
        """The stage's examples, built once (every arm answers the same ones)."""
        if stage not in self._examples:
            found = (self.commit(spec).example(stage) for spec in self.set.commits)
            self._examples[stage] = [e for e in found if e is not None]
        return self._examples[stage]

    def run(
        self,
        stage: str,
        arm: Arm,
        *,
        on_example: Callable[[int, int], None] | None = None,
    ) -> EvalRun:
        """Evaluate `arm` on the stage's examples; resumes an interrupted run, reuses a
        finished one."""
        examples = self.examples(stage)
        base_sha = self.pool.manifest.for_role(STAGE_ROLES[stage]).sha256
        key = examples_key(stage, [e.key for e in examples], self.settings)
        stored = records.open_run(
            self.db, stage, arm.name, arm.sha256, base_sha, key, self.set.source, len(examples)
        )
        if stored.status == "done":
            return EvalRun(stored.id, stage, arm.name, stored.source, stored.summary, True)
        done = records.done_examples(self.db, stored.id)
        # Batches of fixed places in the list (the base's `parallel`), a batch with an
        # example left computed whole: the batch composition, and so every answer, is the
        # same in a resumed run as in an uninterrupted one.
        size = self.pool.manifest.for_role(STAGE_ROLES[stage]).parallel
        for start in range(0, len(examples), size):
            batch = examples[start : start + size]
            if any(e.key not in done for e in batch):
                results = self._call_many(batch, arm)
                codes = self._codes_for_plans(batch, results) if stage == "plan" else None
                for i, (example, result) in enumerate(zip(batch, results, strict=True)):
                    if example.key not in done:
                        code = codes[i] if codes else None
                        answer, detail, outcomes = self._answer(example, result, code)
                        records.record_example(self.db, stored.id, example.key, answer,
                                               detail, outcomes)  # fmt: skip
            if on_example:
                on_example(start + len(batch), len(examples))
        summary = metrics.summarise(stage, records.outcomes(self.db, stored.id))
        records.finish_run(self.db, stored.id, summary)
        return EvalRun(stored.id, stage, arm.name, self.set.source, summary, False)

    def _call_many(self, batch: list[Example], arm: Arm) -> list[StageResult]:
        """The model's answers to a batch of one stage's examples, decoded together."""
        items = [(e.context, e.schema, {"task": e.spec.message, **e.fields}) for e in batch]
        return run_stages(self.pool, batch[0].stage, items, self.settings, arm.adapter)

    def _answer(self, example: Example, result: StageResult, code: StageResult | None):
        detail = {"call_id": result.call_id, "error": result.error}
        return self.judge(example, result.raw, result.output, detail, code)

    def judge(
        self,
        example: Example,
        raw: str,
        output: dict | None,
        detail: dict | None = None,
        code: StageResult | None = None,
    ) -> tuple[str, dict, list[metrics.Outcome]]:
        """(answer, detail, outcomes) of one answer to `example`, wherever it came from (a
        model call here, or an answer file): scored against the real commit, or for plan and
        code graded by the harness. For a plan, `code` is the code stage's answer to it when
        already made (_codes_for_plans), else it is asked for here."""
        detail = dict(detail or {})
        if example.stage not in GRADED:
            return raw, detail, metrics.score(example.stage, example.target, output)
        answer, edits_from = raw, output
        if example.stage == "plan":
            # The plan is judged by what the code stage makes of it, with the code stage's
            # adapter in service: the same for the candidate and the baseline.
            code = code or self._code_for_plan(example, output)
            answer = json.dumps({"plan": raw, "code": code.raw})
            detail["code_call_id"], detail["code_error"] = code.call_id, code.error
            edits_from = code.output
        resolved, verdict = self._grade(example, edits_from)
        detail["verdict"] = verdict
        if verdict["verdict"] == "infra":  # says nothing about the answer: left out of pairing
            return answer, detail, []
        return answer, detail, [metrics.Outcome("", "resolved", float(resolved))]

    def _code_for_plan(self, example: Example, plan_output: dict | None) -> StageResult:
        return self._codes_for_plans([example], [plan_output])[0]

    def _codes_for_plans(self, batch: list[Example], plans: list) -> list[StageResult]:
        """The code stage's answers to a batch of plans (StageResults or their outputs),
        decoded together under the code stage's adapter in service: the same for the
        candidate and the baseline, and the same batch as the plans'."""
        items = []
        for example, plan_output in zip(batch, plans, strict=True):
            if isinstance(plan_output, StageResult):
                plan_output = plan_output.output
            builder = self._builder(example)
            plan_files = [
                s["file"] for s in (plan_output or {}).get("steps", [])
                if isinstance(s, dict) and s.get("file") in builder.files
            ]  # fmt: skip
            files = list(dict.fromkeys([*plan_files, *example.code_files]))
            context = builder.source(
                "code", files, example.primary, _budget(self.pool, "code", self.settings)
            )
            plan = json.dumps(plan_output, indent=1) if plan_output else "(no plan)"
            items.append((context, schemas.code(), {"task": example.spec.message, "plan": plan}))
        adapter = active_adapter(self.config, self.db, "code")
        return run_stages(self.pool, "code", items, self.settings, adapter)

    def messages(self, example: Example) -> list[dict]:
        """The chat messages the stage's model is given for `example`."""
        return messages(example.stage, context=example.context.render(),
                        task=example.spec.message, **example.fields)  # fmt: skip

    def _builder(self, example: Example):
        return self.commit(example.spec).builder

    def _grade(self, example: Example, output: dict | None) -> tuple[bool, dict]:
        edits = [
            SearchReplace(e["path"], e["search"], e["replace"])
            for e in (output or {}).get("edits", [])
            if isinstance(e, dict)
            and all(isinstance(e.get(k), str) for k in ("path", "search", "replace"))
        ]
        if not edits:
            return False, {"verdict": "not_applied", "reason": "no edits"}
        gold, _ = gold_for(self.config, self.db, example.spec)
        verdict = grade_patch(self.config, example.spec, gold, "search_replace", edits)
        return verdict.resolved, {"verdict": verdict.verdict, "reason": verdict.reason}
