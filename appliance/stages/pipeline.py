"""The five stages run in order on one task: each a function from a typed input (the task
and the previous stage's output, with its ContextPackage) to a typed output, produced by
the model pool with the stage's active adapter and constrained to the stage's schema.

When a stage's output is unusable (not valid JSON, nothing usable in it) the next stage
falls back to what the earlier stages and the index give, so one bad answer does not
end the sample; the failure is recorded with the stage.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from appliance.campaign import targets
from appliance.harness.edits import SearchReplace
from appliance.serving.pool import Adapter, Completion, ModelPool, Params
from appliance.stages import STAGE_ROLES, STAGES, schemas
from appliance.stages.context import ContextBuilder, ContextPackage
from appliance.stages.templates import messages

PROMPT_ROOM = 400  # tokens of system prompt, task text and chat markup around the context


@dataclass(frozen=True)
class StageSettings:
    temperature: float = 0.0
    seed: int | None = None
    max_tokens: int = 256
    context_tokens: int = 1536  # the most a stage's ContextPackage may take


@dataclass(frozen=True)
class StageResult:
    stage: str
    context: ContextPackage
    output: dict | None  # the parsed answer; None when unusable
    raw: str
    call_id: int | None
    adapter: str | None
    error: str | None = None


@dataclass(frozen=True)
class PipelineResult:
    """Each stage's result, in the order they ran, and the code stage's edits."""

    stages: dict[str, StageResult]
    edits: tuple[SearchReplace, ...]

    @property
    def call_ids(self) -> list[int]:
        return [r.call_id for r in self.stages.values() if r.call_id is not None]


def _budget(pool: ModelPool, stage: str, settings: StageSettings) -> int:
    window = pool.manifest.for_role(STAGE_ROLES[stage]).context
    return max(64, min(settings.context_tokens, window - settings.max_tokens - PROMPT_ROOM))


def run_stage(
    pool: ModelPool,
    stage: str,
    context: ContextPackage,
    schema: dict,
    settings: StageSettings,
    adapter: Adapter | None,
    **fields: str,
) -> StageResult:
    """One model call for `stage`; the output is parsed, never trusted to be valid."""
    asked, params = stage_request(stage, context, schema, settings, **fields)
    completion = pool.chat(STAGE_ROLES[stage], asked, adapter=adapter, params=params)
    return stage_result(stage, context, completion, adapter)


def run_stages(
    pool: ModelPool,
    stage: str,
    items: Sequence[tuple[ContextPackage, dict, Mapping[str, str]]],
    settings: StageSettings | Sequence[StageSettings],
    adapter: Adapter | None,
) -> list[StageResult]:
    """`stage` on several inputs (context, schema, fields) under one adapter, decoded
    together (ModelPool.chat_many: up to the base's `parallel` in a batch); in order.
    `settings`: for all of them, or one per item."""
    each = [settings] * len(items) if isinstance(settings, StageSettings) else list(settings)
    asked = [stage_request(stage, context, schema, s, **fields)
             for (context, schema, fields), s in zip(items, each, strict=True)]  # fmt: skip
    done = pool.chat_many(STAGE_ROLES[stage], asked, adapter=adapter)
    return [stage_result(stage, item[0], completion, adapter)
            for item, completion in zip(items, done, strict=True)]  # fmt: skip


def stage_request(
    stage: str, context: ContextPackage, schema: dict, settings: StageSettings, **fields: str
) -> tuple[list[dict], Params]:
    """The chat messages and parameters of `stage`'s model call."""
    params = Params(max_tokens=settings.max_tokens, temperature=settings.temperature,
                    seed=settings.seed, json_schema=schema)  # fmt: skip
    return messages(stage, context=context.render(), **fields), params


def stage_result(
    stage: str, context: ContextPackage, completion: Completion, adapter: Adapter | None
) -> StageResult:
    """The stage's answer parsed, never trusted to be valid."""
    error = None
    try:
        output = json.loads(completion.text)
        if not isinstance(output, dict):
            raise ValueError("the answer is not a JSON object")
    except ValueError as exc:
        output = None
        reason = "hit the token limit" if completion.finish_reason == "length" else str(exc)
        error = f"unusable answer: {reason}"
    return StageResult(
        stage,
        context,
        output,
        completion.text,
        completion.call_id,
        adapter.name if adapter else None,
        error,
    )


@dataclass(frozen=True)
class _Ask:
    """One stage call a pipeline waits on: what the driver must run and send back."""

    stage: str
    context: ContextPackage
    schema: dict
    fields: dict


def run_pipeline(
    pool: ModelPool,
    builder: ContextBuilder,
    task: str,
    *,
    settings: StageSettings = StageSettings(),
    adapters: Mapping[str, Adapter] | Callable[[str], Adapter | None] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> PipelineResult:
    """Run task analysis → scope → precision → plan → code on one task.

    `adapters` maps a stage to its adapter, or is a function asked right before each
    stage's model call (appliance.registry.resolver: the active version now); None: the
    base for every stage. `on_stage(stage)` is told as each stage starts (progress)."""
    adapter_for = _adapter_for(adapters)
    steps = _steps(pool, builder, task, settings)
    ask = next(steps)
    while True:
        if on_stage is not None:
            on_stage(ask.stage)
        done = run_stage(pool, ask.stage, ask.context, ask.schema, settings,
                         adapter_for(ask.stage), **ask.fields)  # fmt: skip
        try:
            ask = steps.send(done)
        except StopIteration as end:
            return end.value


def run_pipelines(
    pool: ModelPool,
    builder: ContextBuilder,
    task: str,
    settings: Sequence[StageSettings],
    *,
    adapters: Mapping[str, Adapter] | Callable[[str], Adapter | None] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> list[PipelineResult]:
    """The pipeline of `run_pipeline` for several samples of one task (one `settings`
    each: temperature, seed), run in lockstep: each round, the samples waiting on the same
    stage are decoded together under one adapter (`run_stages`, ModelPool.chat_many),
    so the K samples of the first stage share one prefill of their common prompt. A
    sample's result is what `run_pipeline` with its settings gives, up to the batch's
    effect on decoding (a seeded batch repeats exactly)."""
    adapter_for = _adapter_for(adapters)
    steps = [_steps(pool, builder, task, s) for s in settings]
    asks: dict[int, _Ask] = {i: next(g) for i, g in enumerate(steps)}
    results: dict[int, PipelineResult] = {}
    while asks:
        stage = min(asks.values(), key=lambda a: STAGES.index(a.stage)).stage
        waiting = [i for i, a in asks.items() if a.stage == stage]
        if on_stage is not None:
            on_stage(stage)
        adapter = adapter_for(stage)  # once per batch: one adapter for all its sequences
        done = run_stages(
            pool, stage,
            [(asks[i].context, asks[i].schema, asks[i].fields) for i in waiting],
            [settings[i] for i in waiting], adapter,
        )  # fmt: skip
        for i, result in zip(waiting, done, strict=True):
            try:
                asks[i] = steps[i].send(result)
            except StopIteration as end:
                results[i] = end.value
                del asks[i]
    return [results[i] for i in range(len(steps))]


def _adapter_for(adapters) -> Callable[[str], Adapter | None]:
    if adapters is None:
        return lambda stage: None
    return adapters if callable(adapters) else adapters.get


def _steps(pool: ModelPool, builder: ContextBuilder, task: str, settings: StageSettings):
    """The pipeline of one sample as a generator: it yields each stage call it needs
    (`_Ask`), is sent the StageResult, and returns the PipelineResult."""
    stages: dict[str, StageResult] = {}

    def run(stage: str, context: ContextPackage, schema: dict, **fields: str):
        result = yield _Ask(stage, context, schema, {"task": task, **fields})
        stages[stage] = result
        return result.output

    analysis = (yield from run(
        "task_analysis", builder.task_analysis(task, _budget(pool, "task_analysis", settings)),
        schemas.task_analysis(),
    )) or {}  # fmt: skip
    named = [p for p in analysis.get("files", []) if isinstance(p, str)]
    # Whys as training and evaluation prompts show them: none tells what the model named.
    candidates = targets.neutral(builder.candidates(task, hints=named))
    if not candidates:  # an empty index answer: offer every file
        candidates = [(path, "in the repository") for path in sorted(builder.files)[:8]]
    paths = [path for path, _ in candidates]
    scoped = (yield from run(
        "scope", builder.scope(candidates, _budget(pool, "scope", settings)), schemas.scope(paths)
    )) or {}  # fmt: skip
    in_scope = [
        f["path"] for f in scoped.get("files", [])
        if isinstance(f, dict) and f.get("label") in ("relevant", "supporting")
        and f.get("path") in builder.files
    ]  # fmt: skip
    in_scope = list(dict.fromkeys(in_scope)) or paths[:3]
    precision_context, symbol_ids = builder.precision(
        in_scope, _budget(pool, "precision", settings)
    )
    primary = []
    if symbol_ids:
        picked = (yield from run("precision", precision_context,
                                 schemas.precision(symbol_ids))) or {}  # fmt: skip
        primary = [
            s["symbol"] for s in picked.get("symbols", [])
            if isinstance(s, dict) and s.get("label") == "primary"
        ]  # fmt: skip
    plan = yield from run(
        "plan", builder.source("plan", in_scope, primary, _budget(pool, "plan", settings)),
        schemas.plan(),
    )  # fmt: skip
    plan_files = [
        s["file"] for s in (plan or {}).get("steps", [])
        if isinstance(s, dict) and s.get("file") in builder.files
    ]  # fmt: skip
    code_files = list(dict.fromkeys(plan_files + in_scope))
    answer = (yield from run(
        "code",
        builder.source("code", code_files, primary, _budget(pool, "code", settings)),
        schemas.code(),
        plan=json.dumps(plan, indent=1) if plan else "(no plan)",
    )) or {}  # fmt: skip
    edits = tuple(
        SearchReplace(e["path"], e["search"], e["replace"])
        for e in answer.get("edits", [])
        if isinstance(e, dict)
        and all(isinstance(e.get(k), str) for k in ("path", "search", "replace"))
    )
    return PipelineResult(stages, edits)
