"""Benchmark: evaluation examples per minute decoded in batches (as `forge evaluate` now
does) against one at a time, on the demo package's real examples.

    .venv/bin/python bench/eval_bench.py [--stages S,S] [--commits N] [--repeat R] [--json]
        [--check]

A temporary FORGE_HOME takes the demo package (ingested as an operator would); the
examples are those `forge evaluate` builds, for every third demo commit (at most
--commits), for task analysis, scope and precision: the stages whose answer is scored
without the harness, so the figure is the model's time alone. Each stage's examples are
answered by the base, greedily, both ways in the same run, taking turns, R times:
`run_stage` one example after another, and `run_stages` in batches of the base's
`parallel` (the evaluator's batches). Printed: examples per minute of each, their ratio
(goal, issue 20: ≥ 1.5×), and whether the batched answers were the same in every run.
Exit 0 whatever the results, unless --check is given: then 1 when the goal is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _report import positive as _positive
from _report import progress as _progress
from _report import ratio as _ratio

ROOT = Path(__file__).resolve().parents[1]
GOAL = 1.5
STAGES = ("task_analysis", "scope", "precision")
SETTINGS = "[ingest]\nquiet_seconds = 0\n[evaluation]\nholdout_fraction = 0.0\n"


def demo_examples(home: Path, stages, commits: int):
    from appliance.config import load_config
    from appliance.evaluation.examples import CommitExamples
    from appliance.evaluation.run import settings_for
    from appliance.harness.spec import package_specs
    from appliance.packages import corpus, ingest
    from appliance.packages.split import no_rows
    from appliance.serving.pool import ModelPool
    from appliance.stages.pipeline import _budget
    from appliance.store import open_db

    home.mkdir(parents=True)
    (home / "forge.toml").write_text(SETTINGS)
    os.environ["FORGE_HOME"] = str(home)
    os.environ.pop("FORGE_CONFIG", None)
    config = load_config()
    config.ensure_dirs()
    db = open_db(config)
    result = ingest.ingest_one(config, db, ROOT / "repo_packages" / "demo", keep=True,
                               trained_rows=no_rows)  # fmt: skip
    if result.outcome != "accepted":
        raise SystemExit(f"the demo package was not accepted: {result.to_dict()}")
    pool = ModelPool.from_config(config, log=False)
    settings = settings_for(config)
    specs = package_specs(config, db, corpus.packages(db)[0])[::3][:commits]
    examples = {stage: [] for stage in stages}
    for spec in specs:
        built = CommitExamples(db, pool, spec, lambda s: _budget(pool, s, settings))
        for stage in stages:
            if (example := built.example(stage)) is not None:
                examples[stage].append(example)
    return pool, settings, examples


def answer(pool, settings, examples, batched: bool) -> tuple[float, list[str]]:
    from appliance.stages.pipeline import run_stage, run_stages

    started = time.perf_counter()
    if batched:
        size = pool.manifest.for_role("coder").parallel
        raw = []
        for start in range(0, len(examples), size):
            items = [(e.context, e.schema, {"task": e.spec.message, **e.fields})
                     for e in examples[start : start + size]]  # fmt: skip
            raw += [r.raw for r in run_stages(pool, examples[0].stage, items, settings, None)]
    else:
        raw = [run_stage(pool, e.stage, e.context, e.schema, settings, None,
                         task=e.spec.message, **e.fields).raw for e in examples]  # fmt: skip
    return time.perf_counter() - started, raw


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages")
    parser.add_argument("--commits", type=_positive, default=8, help="evaluation commits")
    parser.add_argument("--repeat", type=_positive, default=2, help="runs each way (median)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--check", action="store_true", help="exit 1 when the goal is missed")
    args = parser.parse_args()
    stages = [s for s in args.stages.split(",") if s]
    if unknown := set(stages) - set(STAGES):
        parser.error(f"unknown or harness-graded stages: {sorted(unknown)}")
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory(prefix="forge-eval-bench-") as tmp:
        _progress("ingesting the demo and building its examples")
        pool, settings, examples = demo_examples(Path(tmp) / "home", stages, args.commits)
        results, alone_total, batched_total, count = {}, 0.0, 0.0, 0
        for stage, found in examples.items():
            _progress(f"{stage}: {len(found)} examples, {args.repeat} runs each way")
            alone, together, outputs = [], [], []
            for _ in range(args.repeat):
                alone.append(answer(pool, settings, found, batched=False)[0])
                seconds, raw = answer(pool, settings, found, batched=True)
                together.append(seconds)
                outputs.append(raw)
            a, b = statistics.median(alone), statistics.median(together)
            alone_total, batched_total, count = (
                alone_total + a,
                batched_total + b,
                count + len(found),
            )
            results[stage] = {"examples": len(found), "one_at_a_time_per_min": 60 * len(found) / a,
                              "batched_per_min": 60 * len(found) / b, "speedup": a / b,
                              "repeats_exactly": all(o == outputs[0] for o in outputs)}  # fmt: skip
        pool.close()
    speedup = alone_total / batched_total
    met = speedup >= GOAL and all(r["repeats_exactly"] for r in results.values())
    report = {"parallel": pool.manifest.for_role("coder").parallel, "examples": count,
              "speedup": speedup, "goal": GOAL, "met": met, "cpus": os.cpu_count(),
              "load": os.getloadavg(), "stages": results}  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"{count} examples, batches of {report['parallel']}, medians of {args.repeat}, "
              f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")  # fmt: skip
        for stage, r in results.items():
            print(f"  {stage:<14} {r['examples']:>3} examples: one at a time "
                  f"{r['one_at_a_time_per_min']:.1f}/min, batched {r['batched_per_min']:.1f}/min "
                  f"({_ratio(r['speedup'])}); repeats exactly: {r['repeats_exactly']}")  # fmt: skip
        print(f"  all: {_ratio(speedup)} (goal ≥ {GOAL}×)")
    return 1 if args.check and not met else 0


if __name__ == "__main__":
    raise SystemExit(main())
