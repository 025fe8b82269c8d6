"""Benchmark: several sequences in one llama.cpp batch (`ModelPool.chat_many`) against the
same calls made one at a time (`ModelPool.chat`), on the default base.

    .venv/bin/python bench/batch_bench.py [--samples K] [--tokens N] [--repeat R] [--json]
        [--check]

Two workloads, each measured both ways in the same run, taking turns, medians of R:

1. K samples of one stage prompt, as a campaign draws them: one long prompt (a task and
   the text of three of Forge's own source files as its context; its size is printed),
   temperature 0.8, a seed per sample. Batched, the prompt is evaluated once and the K
   continuations are decoded together. Goal (issue 20): ≥ 1.6× at K = 3.
2. Independent greedy requests, as an evaluation makes them: K different short prompts
   decoded side by side. Goal (issue 20): ≥ 1.5×.

The figure is model time: the seconds from the first call to the last answer. Nothing goes
to the call log. Batched outputs are checked to repeat exactly between two batched runs.
Exit 0 whatever the results, unless --check is given: then 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from _report import positive as _positive
from _report import progress as _progress
from _report import ratio as _ratio

ROOT = Path(__file__).resolve().parents[1]
GOALS = {"samples": 1.6, "independent": 1.5}
ROLE = "coder"
CONTEXT_FILES = ("appliance/cores.py", "appliance/serving/threads.py", "appliance/digest.py")
QUESTIONS = (
    "What is the capital of France?",
    "Write a Python function that reverses a string.",
    "Name three prime numbers.",
    "What does HTTP stand for?",
    "Explain a Python list comprehension in one sentence.",
    "Write a SQL query that counts rows in a table named orders.",
)


def workloads(samples: int, tokens: int) -> dict[str, list]:
    from appliance.serving.pool import Params

    context = "\n\n".join(f"# {name}\n{(ROOT / name).read_text()}" for name in CONTEXT_FILES)
    ask = "Task: add a function that returns the cores free now. Which files must change?"
    task = [{"role": "user", "content": f"{context}\n\n{ask} Answer with their paths."}]
    return {
        "samples": [
            (task, Params(max_tokens=tokens, temperature=0.8, seed=100 + k)) for k in range(samples)
        ],  # fmt: skip
        "independent": [
            (
                [{"role": "user", "content": QUESTIONS[k % len(QUESTIONS)]}],
                Params(max_tokens=tokens),
            )
            for k in range(samples)
        ],  # fmt: skip
    }


def one_at_a_time(pool, asked) -> tuple[float, list]:
    started = time.perf_counter()
    done = [pool.chat(ROLE, messages, params=params) for messages, params in asked]
    return time.perf_counter() - started, done


def batched(pool, asked) -> tuple[float, list]:
    started = time.perf_counter()
    done = pool.chat_many(ROLE, asked)
    return time.perf_counter() - started, done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=_positive, default=3, help="K: sequences per batch")
    parser.add_argument("--tokens", type=_positive, default=64, help="max tokens per sequence")
    parser.add_argument("--repeat", type=_positive, default=3, help="runs of each (median)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import dataclasses

    from appliance.config import load_config
    from appliance.models.manifest import read_manifest
    from appliance.serving.pool import ModelPool

    manifest = read_manifest(load_config().models_manifest)
    spec = manifest.for_role(ROLE)
    if spec.parallel < args.samples:  # the bench asks for K side by side
        spec = dataclasses.replace(spec, parallel=args.samples)
        manifest = dataclasses.replace(manifest, bases=(spec,), roles={ROLE: spec.name})
    pool = ModelPool(manifest, log=None)
    results = {}
    for name, asked in workloads(args.samples, args.tokens).items():
        _progress(f"{name}: {len(asked)} requests, {args.repeat} runs each way")
        batched(pool, asked)  # warm-up: the batch context is made on first use
        alone, together, outputs = [], [], []
        for _ in range(args.repeat):
            alone.append(one_at_a_time(pool, asked)[0])
            seconds, done = batched(pool, asked)
            together.append(seconds)
            outputs.append([c.tokens for c in done])
        tokens = sum(c.completion_tokens for c in done)
        prompt_tokens = max(c.prompt_tokens for c in done)
        a, b = statistics.median(alone), statistics.median(together)
        results[name] = {"one_at_a_time_s": round(a, 2), "batched_s": round(b, 2),
                         "speedup": round(a / b, 2), "goal": GOALS[name],
                         "tokens_per_batch": tokens, "prompt_tokens": prompt_tokens,
                         "repeats_exactly": all(o == outputs[0] for o in outputs)}  # fmt: skip
    pool.close()
    met = all(r["speedup"] >= r["goal"] and r["repeats_exactly"] for r in results.values())
    report = {"samples": args.samples, "tokens": args.tokens, "repeat": args.repeat,
              "cpus": os.cpu_count(), "load": os.getloadavg(), "met": met,
              "workloads": results}  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"K = {args.samples}, up to {args.tokens} tokens each, medians of {args.repeat}, "
              f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")  # fmt: skip
        for name, r in results.items():
            print(f"  {name:<12} one at a time {r['one_at_a_time_s']:.2f} s, batched "
                  f"{r['batched_s']:.2f} s: {_ratio(r['speedup'])} (goal ≥ {r['goal']}×); "
                  f"prompt {r['prompt_tokens']} tokens, {r['tokens_per_batch']} generated; "
                  f"repeats exactly: {r['repeats_exactly']}")  # fmt: skip
    return 1 if args.check and not met else 0


if __name__ == "__main__":
    raise SystemExit(main())
