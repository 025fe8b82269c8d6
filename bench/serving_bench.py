"""Benchmark: what the model pool costs next to llama.cpp used directly.

    .venv/bin/python bench/serving_bench.py [--tokens N] [--repeat K] [--switches S]
        [--constructions C] [--requests R] [--json] [--check]

Three parts on the default base (the one serving the `reasoning` role in models.toml),
each against a baseline measured in the same run, so the ratios hold on a noisy machine
where absolute speeds drift. Adapters are synthetic (appliance.serving.bench): random
rank-8 LoRA on every attention and MLP projection, the size of a real stage adapter.

1. Generation: tokens/s of greedy decoding of the same prompt through `ModelPool.complete`
   vs a raw `llama_cpp.Llama` of the same file and settings (`create_completion`), runs
   taking turns, medians of K; goal: pool ≥ 0.95× raw. The same with an adapter: the pool
   switching it in vs a `Llama` built with `lora_path` (no goal).
2. Adapter switch: `LoadedBase.use(a)` / `use(b)` alternately (the cache reset included),
   S switches, p50 and p95, vs building a new `Llama(lora_path=...)`, the only way the
   high-level API applies an adapter (median of C after one warm-up); goal: 100× faster.
   Also the first use of an adapter the pool has not seen (checked against the base,
   then loaded).
3. Throughput over R different prompts: no adapter vs one adapter on every request vs two
   adapters alternating request by request (every request a switch); no goal.

Each generation evaluates its prompt from an empty cache, raw and pool alike. The pool
uses every core (threads = 0 in models.toml); llama.cpp slows down many times over when
another busy process shares the cores, so run this on an otherwise idle machine (the
load average at the start and the end is printed). Nothing goes to the call log.
Exit 0 whatever the results, unless --check is given: then 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from _report import positive as _positive
from _report import progress as _progress
from _report import ratio as _ratio
from _report import seconds as _seconds

GENERATION_RATIO_GOAL = 0.95
SWITCH_SPEEDUP_GOAL = 100.0
ROLE = "reasoning"
PROMPTS = (
    "def fibonacci(n):",
    "The three laws of thermodynamics are",
    "import json\n\ndef load_config(path):",
    "Write a haiku about the sea.\n",
    "SELECT name, COUNT(*) FROM orders",
    "class Stack:\n    def __init__(self):",
    "The capital of France is",
    "To install the package, run",
)


@dataclass
class Row:
    section: str
    name: str
    value: float  # tokens/s or seconds, as `unit` says
    unit: str = "tok/s"
    ratio: float | None = None  # value / the section's baseline
    goal: str = ""
    ok: bool | None = None  # None: informative, no goal


def _value(row: Row) -> str:
    return _seconds(row.value) if row.unit == "s" else f"{row.value:.1f} {row.unit}"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# ---------------------------------------------------------------- 1. generation


def bench_generation(pool, spec, adapter, tokens: int, repeat: int) -> tuple[list[Row], dict]:
    from appliance.serving.bench import (
        BENCH_PROMPT,
        bench_role,
        measure_generation,
        raw_llama,
        run_pool,
        run_raw,
    )
    from appliance.serving.pool import Adapter

    placement = pool.base_for(bench_role(spec.name)).placement
    _progress(f"generation: {repeat} rounds of {tokens} tokens, raw / pool / pool+adapter")
    llm = raw_llama(spec, placement)
    try:
        gen = measure_generation(
            pool, spec.name, llm, Adapter("synthetic-a", adapter), tokens=tokens, repeat=repeat
        )
    finally:
        llm.close()
    section = "1. Generation, bare base (tokens/s, median)"
    rows = [
        Row(section, "raw llama_cpp.Llama create_completion", gen.raw.tokens_per_s, ratio=1.0),
        Row(
            section,
            "ModelPool.complete",
            gen.pool.tokens_per_s,
            ratio=gen.ratio,
            goal=f"≥ {GENERATION_RATIO_GOAL}×",
            ok=gen.ratio >= GENERATION_RATIO_GOAL,
        ),
    ]

    _progress(f"generation with the adapter: {repeat} rounds, raw Llama(lora_path) / pool")
    role = bench_role(spec.name)
    with_lora = raw_llama(spec, placement, lora_path=adapter)
    pool_adapter = Adapter("synthetic-a", adapter)
    try:
        run_raw(with_lora, BENCH_PROMPT, tokens)  # warm-up
        raw_runs, pool_runs = [], []
        for round_ in range(repeat):
            pair = [
                lambda: raw_runs.append(run_raw(with_lora, BENCH_PROMPT, tokens)),
                lambda: pool_runs.append(run_pool(pool, role, BENCH_PROMPT, tokens, pool_adapter)),
            ]
            for run in pair if round_ % 2 == 0 else pair[::-1]:
                run()
        same_adapted = raw_runs[0].text == pool_runs[0].text
    finally:
        with_lora.close()
    raw_tps = statistics.median(r.tokens_per_s for r in raw_runs)
    pool_tps = statistics.median(r.tokens_per_s for r in pool_runs)
    section = "1b. Generation with an adapter (tokens/s, median)"
    rows += [
        Row(section, "raw Llama(lora_path=adapter)", raw_tps, ratio=1.0),
        Row(section, "ModelPool.complete(adapter=...)", pool_tps, ratio=pool_tps / raw_tps),
    ]
    info = gen.to_dict() | {
        "tokens_requested": tokens,
        "raw_lora_tokens_per_s": raw_tps,
        "pool_adapter_vs_raw_lora": pool_tps / raw_tps,
        "same_output_with_adapter": same_adapted,
    }
    return rows, info


# ------------------------------------------------------------- 2. adapter switch


def bench_switch(
    pool, spec, adapters: tuple[Path, Path], tmp: Path, switches: int, constructions: int
) -> tuple[list[Row], dict]:
    from appliance.serving.bench import bench_role, raw_llama
    from appliance.serving.pool import Adapter

    base = pool.base_for(bench_role(spec.name))
    a, b = Adapter("synthetic-a", adapters[0]), Adapter("synthetic-b", adapters[1])

    _progress(f"switch: {constructions} + 1 builds of Llama(lora_path=...)")
    builds = []
    for index in range(constructions + 1):
        start = time.perf_counter()
        llm = raw_llama(spec, base.placement, lora_path=adapters[index % 2])
        seconds = time.perf_counter() - start
        llm.close()
        if index:  # the first warms the page cache, in favour of the baseline
            builds.append(seconds)
    build_s = statistics.median(builds)

    _progress(f"switch: {switches} switches between two loaded adapters")
    timings = []
    with base.lock:
        base.use(a)
        base.use(b)  # both loaded (checked against the base, handles made) before timing
        before = base.switches
        for index in range(switches):
            target = a if index % 2 == 0 else b
            start = time.perf_counter()
            base.use(target)
            timings.append(time.perf_counter() - start)
        done = base.switches - before
        _progress("switch: first use of adapters the pool has not seen")
        first_uses = []
        for index in range(3):
            copy = tmp / f"unseen-{index}.gguf"
            shutil.copyfile(adapters[0], copy)
            start = time.perf_counter()
            base.use(Adapter(f"unseen-{index}", copy))
            first_uses.append(time.perf_counter() - start)
        base.use(None)
    if done != switches:
        raise SystemExit(f"expected {switches} adapter switches, the pool counted {done}")
    p50, p95 = _percentile(timings, 0.5), _percentile(timings, 0.95)
    first_use = statistics.median(first_uses)
    section = "2. Adapter switch (latency)"
    goal = f"≤ 1/{SWITCH_SPEEDUP_GOAL:.0f}×"
    rows = [
        Row(section, "new Llama(lora_path=adapter), median", build_s, "s", ratio=1.0),
        Row(
            section,
            "LoadedBase.use(), p50",
            p50,
            "s",
            ratio=p50 / build_s,
            goal=goal,
            ok=build_s / p50 >= SWITCH_SPEEDUP_GOAL,
        ),
        Row(
            section,
            "LoadedBase.use(), p95",
            p95,
            "s",
            ratio=p95 / build_s,
            goal=goal,
            ok=build_s / p95 >= SWITCH_SPEEDUP_GOAL,
        ),
        Row(
            section,
            "first use of an unseen adapter, median of 3",
            first_use,
            "s",
            ratio=first_use / build_s,
        ),
    ]
    info = {
        "switches": switches,
        "p50_s": p50,
        "p95_s": p95,
        "max_s": max(timings),
        "llama_with_lora_build_s": builds,
        "first_use_s": first_uses,
        "speedup_p50": build_s / p50,
        "speedup_p95": build_s / p95,
    }
    return rows, info


# --------------------------------------------------------- 3. mixed throughput


def bench_mixed(pool, spec, adapters, tokens: int, requests: int) -> tuple[list[Row], dict]:
    from appliance.serving.bench import bench_role
    from appliance.serving.pool import Adapter

    role = bench_role(spec.name)
    a, b = Adapter("synthetic-a", adapters[0]), Adapter("synthetic-b", adapters[1])
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(requests)]
    plans = {
        "no adapter": [None] * requests,
        "one adapter on every request": [a] * requests,
        "two adapters, alternating": [a if i % 2 == 0 else b for i in range(requests)],
    }
    _progress(f"mixed: {requests} requests of {tokens} tokens for each of {len(plans)} plans")
    rates: dict[str, list[float]] = {name: [] for name in plans}
    totals = {name: [0, 0.0] for name in plans}
    base = pool.base_for(role)
    for round_ in range(2):  # two rounds, plans in turn, so drift hits all of them alike
        for name in list(plans) if round_ == 0 else list(plans)[::-1]:
            for prompt, adapter in zip(prompts, plans[name], strict=True):
                start = time.perf_counter()
                done = pool.complete(role, prompt, adapter=adapter, max_tokens=tokens)
                seconds = time.perf_counter() - start
                rates[name].append(done.completion_tokens / seconds)
                totals[name][0] += done.completion_tokens
                totals[name][1] += seconds
            with base.lock:
                base.use(None)  # each plan starts from the bare base
    # Medians of per-request rates: one request stalled by another process on the machine
    # would swing a plain total.
    medians = {name: statistics.median(values) for name, values in rates.items()}
    section = "3. Throughput over different prompts (tokens/s, median of requests)"
    baseline = medians["no adapter"]
    rows = [
        Row(section, f"{name} ({requests} × 2 requests)", rate, ratio=rate / baseline)
        for name, rate in medians.items()
    ]
    info = {
        name: {"tokens": n, "seconds": s, "median_tokens_per_s": medians[name]}
        for name, (n, s) in totals.items()
    }
    return rows, info


# ---------------------------------------------------------------- output


def _print_table(title: str, rows: list[Row]) -> None:
    head = f"  {'operation':<46} {'measured':>12} {'ratio':>11}  {'goal':<12} result"
    print(title)
    print(head)
    print("  " + "-" * (len(head) - 2))
    for row in rows:
        result = "" if row.ok is None else ("PASS" if row.ok else "MISS")
        line = f"  {row.name:<46} {_value(row):>12} {_ratio(row.ratio):>11}  {row.goal:<12} "
        print((line + result).rstrip())
    print()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Ratios are measured / baseline, both from this run.",
    )
    parser.add_argument(
        "--tokens", type=_positive, default=64, help="tokens generated per run (default 64)"
    )
    parser.add_argument(
        "--repeat", type=_positive, default=5, help="generation rounds, medians (default 5)"
    )
    parser.add_argument(
        "--switches", type=_positive, default=2000, help="adapter switches timed (default 2000)"
    )
    parser.add_argument(
        "--constructions",
        type=_positive,
        default=3,
        help="timed builds of Llama(lora_path=...) (default 3)",
    )
    parser.add_argument(
        "--requests",
        type=_positive,
        default=8,
        help="requests of each kind in part 3, twice over (default 8)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    args = parser.parse_args()

    from appliance.config import load_config
    from appliance.errors import ForgeError
    from appliance.models.manifest import read_manifest, verify_base
    from appliance.serving.bench import bench_manifest, synthetic_adapter
    from appliance.serving.pool import ModelPool

    load_at_start = os.getloadavg()[0]
    started = time.perf_counter()
    try:
        manifest = read_manifest(load_config().models_manifest)
        spec = manifest.for_role(ROLE)
        verify_base(spec)
    except ForgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="forge-serving-bench-") as tmpdir:
        tmp = Path(tmpdir)
        _progress(f"writing two synthetic adapters for {spec.name}")
        adapters = (
            synthetic_adapter(spec.path, tmp / "synthetic-a.gguf", seed=0),
            synthetic_adapter(spec.path, tmp / "synthetic-b.gguf", seed=1),
        )
        pool = ModelPool(bench_manifest(manifest), log=None)
        try:
            gen_rows, gen_info = bench_generation(pool, spec, adapters[0], args.tokens, args.repeat)
            switch_rows, switch_info = bench_switch(
                pool, spec, adapters, tmp, args.switches, args.constructions
            )
            mixed_rows, mixed_info = bench_mixed(
                pool, spec, adapters, min(args.tokens, 32), args.requests
            )
        finally:
            pool.close()
    rows = gen_rows + switch_rows + mixed_rows
    missed = [row.name for row in rows if row.ok is False]
    elapsed = time.perf_counter() - started
    machine = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "base": spec.name,
        "threads": spec.n_threads,
        "device": gen_info["device"],
        "load_average_at_start": round(load_at_start, 2),
        "load_average_at_end": round(os.getloadavg()[0], 2),
        "elapsed_s": round(elapsed, 1),
    }
    if args.json:
        print(
            json.dumps(
                {
                    "machine": machine,
                    "rows": [asdict(row) for row in rows],
                    "generation": gen_info,
                    "switch": switch_info,
                    "mixed": mixed_info,
                    "goals_met": not missed,
                    "missed": missed,
                },
                indent=2,
                ensure_ascii=False,
            )
        )
        return 1 if args.check and missed else 0
    print(
        f"\n{spec.name} on {machine['device']}, {spec.n_threads} threads; {machine['cpus']} CPUs, "
        f"Python {machine['python']}; load average {load_at_start:.2f} at start, "
        f"{machine['load_average_at_end']:.2f} at end; "
        f"{gen_info['prompt_tokens']}-token prompt, {args.tokens} tokens a run, "
        f"median of {args.repeat}\n"
    )
    by_section: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_section[row.section].append(row)
    for title, section_rows in by_section.items():
        _print_table(title, section_rows)
    same = "same" if gen_info["same_output"] else "DIFFERENT"
    same_lora = "same" if gen_info["same_output_with_adapter"] else "DIFFERENT"
    print(
        f"  greedy text: pool vs raw {same}; with the adapter, pool vs Llama(lora_path) {same_lora}"
    )
    print(
        f"  switch: {switch_info['switches']} switches, max {_seconds(switch_info['max_s'])}; "
        f"{switch_info['speedup_p50']:,.0f}× (p50) and {switch_info['speedup_p95']:,.0f}× (p95) "
        "faster than a new Llama; the reset makes the next request evaluate its whole prompt"
    )
    print(
        "  mixed: part 3 uses different prompts, so no request reuses a cached prompt in any "
        "plan; what differs is the adapter's own compute and the switches\n"
    )
    verdict = "all goals met" if not missed else f"goals MISSED: {', '.join(missed)}"
    print(f"{verdict} (whole benchmark: {elapsed:.0f} s)")
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
