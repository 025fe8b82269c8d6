"""Benchmark: the pool's thread count when models.toml says `threads = 0`, against every
fixed count, on an idle machine and beside a competing busy process.

    .venv/bin/python bench/threads_bench.py [--tokens N] [--repeat K] [--json] [--check]

llama.cpp's threads spin at a barrier after every layer, so a thread preempted by another
process holds all of them back (issue 20). With `threads = 0` the pool gives each call the
cores that are free when it starts (appliance.serving.threads). For each condition (idle;
one busy process per core but one, pinned to the usable cores) this measures greedy tokens/s
of the same prompts through `ModelPool.complete` with each fixed count from 1 to the usable
cores and with 0, taking turns, medians of K, and prints the free-cores pool's speed over
the best fixed count's in the same condition: the count an operator would have had to
guess right. Goal: ≥ 0.8× in every condition. Nothing goes to the call log.
Exit 0 whatever the results, unless --check is given: then 1 when the goal is missed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from _report import positive as _positive
from _report import progress as _progress
from _report import ratio as _ratio

GOAL = 0.8
ROLE = "reasoning"
PROMPTS = ("def fibonacci(n):", "The three laws of thermodynamics are",
           "import json\n\ndef load_config(path):")  # fmt: skip


@contextmanager
def busy(processes: int):
    """`processes` Python loops spinning on the usable cores until the block ends."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(processes)]  # fmt: skip
    try:
        yield
    finally:
        for proc in spinners:
            proc.kill()
            proc.wait()


def tokens_per_s(pool, tokens: int) -> float:
    from appliance.serving.bench import bench_role

    spec = pool.manifest.for_role(ROLE)
    done = seconds = 0.0
    for prompt in PROMPTS:
        result = pool.complete(bench_role(spec.name), prompt, max_tokens=tokens, temperature=0.0,
                               seed=1)  # fmt: skip
        done += result.completion_tokens
        seconds += result.duration_s
    return done / seconds


def measure(pools: dict[str, object], tokens: int, repeat: int) -> dict[str, float]:
    runs: dict[str, list[float]] = {name: [] for name in pools}
    for _ in range(repeat):
        for name, pool in pools.items():  # taking turns: drift hits every count alike
            runs[name].append(tokens_per_s(pool, tokens))
    return {name: statistics.median(values) for name, values in runs.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=_positive, default=48, help="tokens per completion")
    parser.add_argument("--repeat", type=_positive, default=3, help="runs per count (median)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--check", action="store_true", help="exit 1 when the goal is missed")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from appliance import cores
    from appliance.config import load_config
    from appliance.models.manifest import read_manifest
    from appliance.serving.bench import bench_manifest
    from appliance.serving.pool import ModelPool

    manifest = bench_manifest(read_manifest(load_config().models_manifest))
    spec = manifest.for_role(ROLE)
    usable = cores.usable()

    def pool(threads: int) -> ModelPool:
        base = dataclasses.replace(spec, threads=threads)
        bases = tuple(base if b.name == spec.name else b for b in manifest.bases)
        return ModelPool(dataclasses.replace(manifest, bases=bases), log=None, gpus=[])

    pools = {f"{n} fixed": pool(n) for n in range(1, usable + 1)} | {"free cores (0)": pool(0)}
    conditions = {"idle": 0} | ({f"{usable - 1} busy process(es)": usable - 1} if usable > 1
                                else {})  # fmt: skip
    results = {}
    for condition, spinners in conditions.items():
        _progress(f"{condition}: {len(pools)} pools × {args.repeat} runs")
        with busy(spinners):
            speeds = measure(pools, args.tokens, args.repeat)
        best = max((v, k) for k, v in speeds.items() if k.endswith("fixed"))
        results[condition] = {"tokens_per_s": speeds, "best_fixed": best[1],
                              "ratio": speeds["free cores (0)"] / best[0]}  # fmt: skip
    met = all(r["ratio"] >= GOAL for r in results.values())
    report = {"usable_cores": usable, "machine_cores": os.cpu_count(), "tokens": args.tokens,
              "repeat": args.repeat, "goal": GOAL, "met": met, "conditions": results}  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"{usable} usable cores; greedy tokens/s, median of {args.repeat}")
        for condition, r in results.items():
            cells = ", ".join(f"{k} {v:.1f}" for k, v in r["tokens_per_s"].items())
            print(f"  {condition:<22} {cells}  →  free cores / best fixed ({r['best_fixed']}) "
                  f"= {_ratio(r['ratio'])}  (goal ≥ {GOAL}×)")  # fmt: skip
    return 1 if args.check and not met else 0


if __name__ == "__main__":
    raise SystemExit(main())
