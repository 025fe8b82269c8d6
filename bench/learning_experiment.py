"""Does the loop learn? Train one stage (scope unless --stage says otherwise) on the demo
package's training commits and measure it on the demo's held-out commits (the newest 13)
before (the base) and after (the candidate), task by task with the gate's statistics,
beside the best trivial baseline (answers that need no model) of each metric.

    .venv/bin/python bench/learning_experiment.py [--home DIR] [--samples K]
        [--commits N] [--steps S] [--epochs E] [--lr LR] [--stage STAGE] [--json]

Every step is the operator's command (`forge ingest`, `forge campaign run`, `forge
datasets build`, `forge train`, `forge eval`) run in a FORGE_HOME of its own (default: a
new temporary folder; pass --home to keep it, and to resume an interrupted run: each
step skips what is done). The numbers are whatever happened: the script reports them,
it does not judge them. Exit 0 whatever the verdict.
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
FORGE = [sys.executable, "-m", "appliance"]

SETTINGS = """\
[ingest]
quiet_seconds = 0
[harness]
gold_runs = 1
[campaign]
context_tokens = 512
max_tokens = 128
[training]
threads = {threads}
epochs = {epochs}
max_steps = {steps}
grad_accum = 4
max_seq_len = 1024
lr = {lr}
[evaluation]
holdout_fraction = 0.35
[cycle]
stages = ["scope"]
[index]
threads = {threads}
[models]
manifest = "{manifest}"
"""


def forge(home: Path, *args: str, ok=(0,)) -> str:
    env = os.environ | {"FORGE_HOME": str(home)}
    env.pop("FORGE_CONFIG", None)
    started = time.monotonic()
    out = subprocess.run([*FORGE, *args], cwd=ROOT, env=env, capture_output=True, text=True)
    print(f"  forge {' '.join(args)}: exit {out.returncode} in {time.monotonic() - started:.0f} s",
          file=sys.stderr)  # fmt: skip
    if out.returncode not in ok:
        sys.exit(f"forge {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def models_manifest(home: Path, threads: int) -> Path:
    """A copy of the installed models.toml whose bases run on `threads` CPU threads.

    llama.cpp's threads wait on each other: with all cores (threads 0) and anything else
    busy on a 2-core machine, generation fell from about 70 to under 1 token/s."""
    import tomlkit

    installed = ROOT / "models" / "models.toml"
    doc = tomlkit.parse(installed.read_text())
    for base in doc["bases"].values():
        base["path"] = os.path.abspath(installed.parent / base["path"])
        base["threads"] = threads
    path = home / "models.toml"
    path.write_text(tomlkit.dumps(doc))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="FORGE_HOME to use (kept; resumable)")
    parser.add_argument("--samples", type=int, default=1, help="campaign samples per commit")
    parser.add_argument("--commits", type=int, help="train commits to use (default: all)")
    parser.add_argument("--steps", type=int, default=0, help="optimizer steps (0: epochs)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--stage", default="scope", help="the stage to train and evaluate")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="CPU threads for llama.cpp and torch (1: steady when other work shares the cores)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="forge-learning-"))
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "forge.toml").exists():
        manifest = models_manifest(home, args.threads)
        (home / "forge.toml").write_text(
            SETTINGS.format(
                epochs=args.epochs,
                steps=args.steps,
                lr=args.lr,
                threads=args.threads,
                manifest=manifest,
            )  # fmt: skip
        )
    started = time.monotonic()
    forge(home, "init")
    forge(home, "ingest", "--keep", str(ROOT / "repo_packages" / "demo"), ok=(0, 1))
    campaign = ["campaign", "run", "demo", "--samples", str(args.samples), "--json"]
    if args.commits:
        campaign += ["--commits", str(args.commits)]
    forge(home, *campaign)
    stage = args.stage
    forge(home, "datasets", "build", stage)
    datasets = json.loads(forge(home, "datasets", "list", "--json"))
    dataset = [d for d in datasets if d["stage"] == stage and d["kind"] == "sft"][-1]
    adapters = json.loads(forge(home, "adapters", stage, "--json"))
    if not any(a["dataset"] == dataset["name"] for a in adapters):
        forge(home, "train", stage, "--json")
        adapters = json.loads(forge(home, "adapters", stage, "--json"))
    adapter = [a for a in adapters if a["dataset"] == dataset["name"]][-1]
    report = json.loads(forge(home, "eval", stage, "--candidate", f"v{adapter['version']}",
                              "--json", ok=(0, 3)))  # fmt: skip
    result = {
        "home": str(home),
        "dataset": {k: dataset[k] for k in ("name", "rows", "status")},
        "adapter": {
            "name": adapter["name"],
            "steps": adapter["metrics"]["steps"],
            "final_loss": adapter["metrics"]["final_loss"],
        },  # fmt: skip
        "examples": report["examples"],
        "source": report["source"],
        "verdict": report["verdict"],
        "reasons": report["reasons"],
        "metrics": report["metrics"],
        "best_baselines": report["best_baselines"],
        "baselines": report["baselines"],
        "leak_check": report["leak_check"],
        "minutes": round((time.monotonic() - started) / 60, 1),
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(
        f"{stage}: {result['dataset']['name']} ({result['dataset']['rows']} rows) → "
        f"{adapter['name']} ({result['adapter']['steps']} steps, final loss "
        f"{result['adapter']['final_loss']:.3f}); {report['examples']} held-out commits"
    )
    print_report(report)
    print(f"({result['minutes']} min; FORGE_HOME {home})")
    return 0


def print_report(report: dict, indent: str = "") -> None:
    """A `forge eval --json` report as a table: each metric, base and candidate, the best
    trivial baseline, the difference with its interval, p and the outcome; then the leak
    check and the verdict."""
    print(f"{indent}{'metric':16} {'tasks':>5} {'base':>6} {'after':>6} {'best baseline':>26} "
          f"{'delta':>7} {'95% CI of delta':>18} {'p':>7} {'outcome':>10}")  # fmt: skip
    for m in report["metrics"]:
        lo, hi = m["delta_interval"]
        best = report["best_baselines"].get(m["metric"])
        shown = f"{best['name']} {best['value']:.3f}" if best else "–"
        print(f"{indent}{m['metric']:16} {m['n']:5d} {m['baseline']:6.3f} {m['candidate']:6.3f} "
              f"{shown:>26} {m['delta']:+7.3f} {f'[{lo:+.3f}, {hi:+.3f}]':>18} "
              f"{m['p_value']:7.4f} {m['outcome']:>10}")  # fmt: skip
    leak = report["leak_check"]
    print(f"{indent}leak check: {leak['leaks']} of {leak['tasks']} tasks in "
          f"{leak['dataset']}'s rows")  # fmt: skip
    print(f"{indent}verdict: {report['verdict']} — " + "; ".join(report["reasons"]))


if __name__ == "__main__":
    raise SystemExit(main())
