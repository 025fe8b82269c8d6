"""Benchmark: campaign throughput on the demo package, and where the time goes.

    .venv/bin/python bench/campaign_bench.py [--commits K] [--samples S] [--json]
    .venv/bin/python bench/campaign_bench.py --lockstep [--commits K] [--samples S] [--json]

Runs a real campaign (SmolLM2 through the model pool, the index, the sandbox) on the
first K usable demo commits, S samples each, in a temporary FORGE_HOME. Gold grading
(the harness) runs first and is timed apart. Prints commits and samples per hour and a
breakdown of a sample's time (model calls, indexing, sandbox runs, the rest), with the
model-call time as the baseline: the ratio says how much the campaign costs beyond the
model calls themselves, measured in the same run.

With --lockstep: the same campaign twice, each in a fresh FORGE_HOME, in one run: first
with each sample's five stages run one call at a time (`campaign.lockstep = false`, the
baseline), then with a commit's samples run stage by stage together (the default: one
batch per stage, the shared first prompt prefilled once). Prints the model-call time per
commit of each and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "repo_packages" / "demo"


def _home(tmp: Path, commits: int, lockstep: bool = True):
    os.environ["FORGE_HOME"] = str(tmp / "home")
    os.environ.pop("FORGE_CONFIG", None)
    (tmp / "home").mkdir()
    (tmp / "home" / "forge.toml").write_text(
        f"[ingest]\nquiet_seconds = 0\n[campaign]\nlockstep = {str(lockstep).lower()}\n"
    )
    forge = [sys.executable, "-m", "appliance"]
    subprocess.run([*forge, "ingest", "--keep", str(DEMO)], check=True, capture_output=True)
    from appliance.config import load_config
    from appliance.store import open_db

    config = load_config()
    return config, open_db(config)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=3, help="usable commits (default 3)")
    parser.add_argument("--samples", type=int, default=2, help="samples per commit (default 2)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "--lockstep", action="store_true",
        help="model time per commit: samples one call at a time vs stage by stage together",
    )  # fmt: skip
    args = parser.parse_args()
    if args.lockstep:
        return _compare(args)
    if not (DEMO / "manifest.json").is_file():
        sys.exit("repo_packages/demo is missing: run ./install.sh")
    from appliance.campaign.run import plan_units, run_campaign

    with tempfile.TemporaryDirectory(prefix="campaign-bench-") as tmp:
        config, db = _home(Path(tmp), args.commits)
        started = time.monotonic()
        plan_units(config, db, "demo", commits=args.commits, samples=args.samples)
        harness_s = time.monotonic() - started
        started = time.monotonic()
        results = list(run_campaign(config, db, "demo", commits=args.commits, samples=args.samples))
        campaign_s = time.monotonic() - started
        phases: dict[str, float] = {}
        for result in results:
            for name, seconds in result.seconds.items():
                phases[name] = phases.get(name, 0.0) + seconds
        calls = db.execute(
            "SELECT COUNT(*), SUM(duration_s), SUM(prompt_tokens), SUM(completion_tokens) "
            "FROM model_calls"
        ).fetchone()
        outcomes: dict[str, int] = {}
        for result in results:
            outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
    commits = len({r.sha for r in results})
    model_s = phases.get("model_calls", 0.0) or 1e-9
    accounted = sum(phases.values())
    phases["other (startup, loading models, recording)"] = max(0.0, campaign_s - accounted)
    data = {
        "commits": commits,
        "samples": len(results),
        "gold_grading_s": round(harness_s, 2),
        "campaign_s": round(campaign_s, 2),
        "commits_per_hour": round(commits / campaign_s * 3600, 1),
        "samples_per_hour": round(len(results) / campaign_s * 3600, 1),
        "ratio_to_model_calls": round(campaign_s / model_s, 3),
        "phases_s": {k: round(v, 2) for k, v in phases.items()},
        "model_calls": {
            "calls": calls[0],
            "seconds": round(calls[1] or 0, 2),
            "prompt_tokens": calls[2],
            "completion_tokens": calls[3],
        },
        "outcomes": outcomes,
    }
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"\ndemo: {commits} commits × {args.samples} samples, {os.cpu_count()} CPUs\n")
    print(f"  {'measure':44} {'value':>12}")
    print("  " + "-" * 58)
    print(f"  {'gold grading first (harness)':44} {harness_s:>10.1f} s")
    print(f"  {'campaign':44} {campaign_s:>10.1f} s")
    print(f"  {'commits per hour':44} {data['commits_per_hour']:>12}")
    print(f"  {'samples per hour':44} {data['samples_per_hour']:>12}")
    print(f"  {'campaign ÷ model-call time (baseline)':44} {data['ratio_to_model_calls']:>11}×")
    print(f"\n  {'where the time goes':44} {'seconds':>8} {'share':>7}")
    print("  " + "-" * 61)
    for name, seconds in sorted(phases.items(), key=lambda kv: -kv[1]):
        print(f"  {name:44} {seconds:>8.1f} {seconds / campaign_s:>6.1%}")
    mc = data["model_calls"]
    print(
        f"\n  {mc['calls']} model calls: {mc['prompt_tokens']} prompt tokens, "
        f"{mc['completion_tokens']} generated; outcomes {outcomes}"
    )
    return 0


def _model_time(commits: int, samples: int, lockstep: bool) -> dict:
    from appliance.campaign.run import plan_units, run_campaign

    with tempfile.TemporaryDirectory(prefix="campaign-bench-") as tmp:
        config, db = _home(Path(tmp), commits, lockstep)
        plan_units(config, db, "demo", commits=commits, samples=samples)  # gold grading
        results = list(run_campaign(config, db, "demo", commits=commits, samples=samples))
        model_s = sum(r.seconds.get("model_calls", 0.0) for r in results)
        calls = db.execute(
            "SELECT COUNT(*), SUM(prompt_tokens), SUM(completion_tokens) FROM model_calls"
        ).fetchone()
    done = len({r.sha for r in results})
    return {
        "lockstep": lockstep,
        "commits": done,
        "samples": len(results),
        "model_s": round(model_s, 2),
        "model_s_per_commit": round(model_s / max(done, 1), 2),
        "calls": calls[0],
        "prompt_tokens": calls[1],
        "completion_tokens": calls[2],
    }


def _compare(args) -> int:
    alone = _model_time(args.commits, args.samples, lockstep=False)
    together = _model_time(args.commits, args.samples, lockstep=True)
    ratio = alone["model_s_per_commit"] / (together["model_s_per_commit"] or 1e-9)
    data = {"samples_per_commit": args.samples, "one_at_a_time": alone, "lockstep": together,
            "speedup": round(ratio, 2)}  # fmt: skip
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"\ndemo: {args.commits} commits × {args.samples} samples, {os.cpu_count()} CPUs\n")
    print(f"  {'model-call time per commit':44} {'seconds':>8} {'calls':>6} {'tokens out':>10}")
    print("  " + "-" * 72)
    arms = (("one call at a time (baseline)", alone), ("stage by stage together", together))
    for name, d in arms:
        print(f"  {name:44} {d['model_s_per_commit']:>8.1f} {d['calls']:>6} "
              f"{d['completion_tokens']:>10}")  # fmt: skip
    print(f"\n  speed-up: {ratio:.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
