"""Does a teacher's data help, and does DPO? One stage (task_analysis unless --stage says
otherwise) of one repo package (the demo unless --package says otherwise), three
candidates measured on the package's held-out commits beside the base and the best
trivial baseline of each metric, with the gate's verdicts:

1. **own**: SFT on the stage's rows from Forge's own campaign (the student's samples,
   labelled from the real commits);
2. **own + teacher**: SFT on those rows and the rows of a data package that `forge teacher
   run` made with a teacher on the same training commits, ingested as a USB package is;
3. **DPO**: DPO on the campaign's preference pairs, continuing the better of 1 and 2 (the
   one the gate scored higher on the stage's first metric), which is its reference.

    .venv/bin/python bench/teacher_experiment.py [--home DIR] [--package DIR] [--stage STAGE]
        [--commits N] [--samples K] [--steps S] [--dpo-steps S] [--holdout F]
        [--max-examples N]
        [--endpoint URL --model NAME [--api-key-env VAR] [--license TEXT]] [--json]

The teacher is any OpenAI-compatible endpoint (`--endpoint`, `--model`: a hosted model on
the connected side, a local vLLM or llama-server). Without one, the script starts `forge
serve` on loopback and the box's own base is the teacher: the only model that runs here
offline, so that run measures the channel, not a stronger teacher.

Every step is the operator's command in a FORGE_HOME of its own (default: a new temporary
folder; --home keeps it and resumes an interrupted run). Held-out commits never reach a
dataset: the campaign and the teacher run skip them, and `forge eval` checks each
candidate's dataset against the evaluated tasks (its leak check is printed). The numbers
are whatever happened; the script reports them and does not judge. Exit 0 whatever the
verdicts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORGE = [sys.executable, "-m", "appliance"]
sys.path.insert(0, str(ROOT / "bench"))

from learning_experiment import forge, models_manifest, print_report  # noqa: E402

SETTINGS = """\
[ingest]
quiet_seconds = 0
[harness]
gold_runs = 1
[campaign]
samples = {samples}
context_tokens = 576
max_tokens = 160
[training]
threads = {threads}
max_steps = {steps}
grad_accum = 1
max_seq_len = 1024
lr = {lr}
[evaluation]
holdout_fraction = {holdout}
max_examples = {max_examples}
[index]
threads = {threads}
[models]
manifest = "{manifest}"
"""


class Served:
    """`forge serve` on a free loopback port in `home`: the box's base as the teacher."""

    def __init__(self, home: Path) -> None:
        env = os.environ | {"FORGE_HOME": str(home)}
        env.pop("FORGE_CONFIG", None)
        self.log = open(home / "serve.log", "w")  # noqa: SIM115 (closed in __exit__)
        command = [*FORGE, "serve", "--port", "0"]
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=self.log, text=True
        )
        self.url = ""
        for line in self.process.stdout:
            if found := re.search(r"OPENAI_BASE_URL=(\S+)", line):
                self.url = found.group(1)
                break
        if not self.url:
            sys.exit(f"forge serve did not start: see {self.log.name}")

    def __enter__(self) -> Served:
        return self

    def __exit__(self, *_) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
        self.log.close()


def teacher_package(home: Path, args) -> dict:
    """Run the teacher on the package's training commits (resumed if run before) and
    ingest its data package, as it would arrive on USB. Returns the teacher run's report."""
    out = home / "teacher"
    common = ["--commits", str(args.commits), "--samples", str(args.samples), "--json",
              "--max-tokens", "512", "--license", args.license]  # fmt: skip
    if args.endpoint:
        teacher = ["--endpoint", args.endpoint, "--model", args.model,
                   "--api-key-env", args.api_key_env]  # fmt: skip
        report = json.loads(forge(home, "teacher", "run", args.name, "-o", str(out), *teacher,
                                  *common, ok=(0, 1)))  # fmt: skip
    else:
        with Served(home) as served:
            report = json.loads(forge(home, "teacher", "run", args.name, "-o", str(out),
                                      "--endpoint", served.url, "--model", "reasoning",
                                      "--api-key-env", "none", *common, ok=(0, 1)))  # fmt: skip
    if report.get("data_package"):
        drop = home / "ingest" / Path(report["data_package"]).name
        if not drop.exists() and not _ingested(home, drop.name):
            shutil.copytree(report["data_package"], drop)
            (drop / "READY").touch()
            forge(home, "ingest", ok=(0, 1))
    return report


def _ingested(home: Path, name: str) -> bool:
    import sqlite3

    with sqlite3.connect(home / "forge.db") as db:
        rows = db.execute("SELECT name || '-' || version FROM data_packages").fetchall()
    return name in {r[0] for r in rows}


def dataset(home: Path, stage: str, kind: str) -> dict | None:
    found = [d for d in json.loads(forge(home, "datasets", "list", "--json"))
             if d["stage"] == stage and d["kind"] == kind]  # fmt: skip
    return found[-1] if found else None


def trained(home: Path, stage: str, name: str, *more: str) -> dict:
    """The adapter trained on dataset `name` (trained now if there is none yet)."""
    adapters = json.loads(forge(home, "adapters", stage, "--json"))
    if not any(a["dataset"] == name for a in adapters):
        forge(home, "train", stage, *more, "--json")
        adapters = json.loads(forge(home, "adapters", stage, "--json"))
    return [a for a in adapters if a["dataset"] == name][-1]


def evaluated(home: Path, stage: str, adapter: dict) -> dict:
    report = json.loads(forge(home, "eval", stage, "--candidate", f"v{adapter['version']}",
                              "--json", ok=(0, 3)))  # fmt: skip
    return {
        "adapter": adapter["name"],
        "kind": adapter["kind"],
        "dataset": adapter["dataset"],
        "steps": adapter["metrics"].get("steps"),
        "final_loss": adapter["metrics"].get("final_loss"),
        "examples": report["examples"],
        "verdict": report["verdict"],
        "reasons": report["reasons"],
        "metrics": report["metrics"],
        "best_baselines": report["best_baselines"],
        "leak_check": report["leak_check"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="FORGE_HOME to use (kept; resumable)")
    parser.add_argument("--package", type=Path, default=ROOT / "repo_packages" / "demo",
                        help="the repo package folder (default: the shipped demo)")  # fmt: skip
    parser.add_argument("--stage", default="task_analysis")
    parser.add_argument("--commits", type=int, default=4, help="training commits used")
    parser.add_argument("--samples", type=int, default=2, help="samples per commit, both runs")
    parser.add_argument("--steps", type=int, default=12, help="SFT optimizer steps")
    parser.add_argument("--dpo-steps", type=int, default=3)
    parser.add_argument(
        "--holdout",
        type=float,
        default=0.35,
        help="share of the newest commits held out for evaluation (a small "
        "project needs more than the demo's 0.35 to reach evaluation.min_tasks)",
    )
    parser.add_argument("--max-examples", type=int, default=13, help="evaluation commits used")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--endpoint", help="the teacher's OpenAI-compatible base URL")
    parser.add_argument("--model", help="the teacher model (with --endpoint)")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY")
    parser.add_argument("--license", default="experiment only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if bool(args.endpoint) != bool(args.model):
        parser.error("--endpoint and --model go together")
    try:
        args.name = json.loads((args.package / "manifest.json").read_text())["name"]
    except (OSError, ValueError, KeyError) as exc:
        parser.error(f"{args.package} is not a repo package: {exc}")
    home = args.home or Path(tempfile.mkdtemp(prefix="forge-teacher-"))
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "forge.toml").exists():
        (home / "forge.toml").write_text(SETTINGS.format(
            samples=args.samples, steps=args.steps, lr=args.lr, threads=args.threads,
            holdout=args.holdout, max_examples=args.max_examples,
            manifest=models_manifest(home, args.threads)))  # fmt: skip
    started = time.monotonic()
    stage = args.stage
    forge(home, "init")
    forge(home, "ingest", "--keep", str(args.package), ok=(0, 1))
    forge(home, "campaign", "run", args.name, "--commits", str(args.commits), "--json")

    forge(home, "datasets", "build", stage)
    own_rows = dataset(home, stage, "sft")
    if own_rows is None:
        print(f"no {stage} SFT dataset could be built from the campaign: is {args.name} an "
              "evaluation package (forge status shows its split; build it with --split train)?",
              file=sys.stderr)  # fmt: skip
        return 1
    arms = {"own": evaluated(home, stage, trained(home, stage, own_rows["name"]))}

    teacher = teacher_package(home, args)
    forge(home, "datasets", "build", stage)
    with_teacher = dataset(home, stage, "sft")
    if with_teacher["name"] != own_rows["name"]:
        arms["own + teacher"] = evaluated(home, stage,
                                          trained(home, stage, with_teacher["name"]))  # fmt: skip

    first = arms["own"]["metrics"][0]["metric"]
    best = max(arms.values(), key=lambda arm: _value(arm, first))
    pairs = dataset(home, stage, "dpo")
    dpo_note = None
    if pairs is None or pairs["status"] != "ok":
        dpo_note = f"no DPO dataset passed its gates ({pairs and pairs['status']})"
    else:
        on = best["adapter"].rsplit("-v", 1)[1]
        dpo = trained(home, stage, pairs["name"], "--dpo", "--on", f"v{on}",
                      "--max-steps", str(args.dpo_steps))  # fmt: skip
        arms[f"DPO on {best['adapter']}"] = evaluated(home, stage, dpo)

    result = {
        "home": str(home),
        "stage": stage,
        "teacher": {
            "endpoint": args.endpoint or "forge serve (the box's own base)",
            "model": args.model or "reasoning",
            "outcomes": teacher.get("outcomes"),
            "data_package": teacher.get("data_package"),
            "rows": teacher.get("rows"),
            "note": teacher.get("note"),
        },
        "datasets": {
            "own": own_rows["name"],
            "with_teacher": with_teacher["name"],
            "dpo": pairs and {k: pairs[k] for k in ("name", "rows", "status")},
        },  # fmt: skip
        "dpo_note": dpo_note,
        "arms": arms,
        "minutes": round((time.monotonic() - started) / 60, 1),
    }
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        _print(result)
    return 0


def _value(arm: dict, metric: str) -> float:
    return next(m["candidate"] for m in arm["metrics"] if m["metric"] == metric)


def _print(result: dict) -> None:
    teacher = result["teacher"]
    print(f"teacher: {teacher['model']} at {teacher['endpoint']}; samples {teacher['outcomes']}; "
          f"package {teacher['data_package'] or 'none'}"
          + (f" ({teacher['note']})" if teacher["note"] else ""))  # fmt: skip
    if result["datasets"]["with_teacher"] == result["datasets"]["own"]:
        print("own + teacher: not trained: the teacher added no row for this stage")
    if result["dpo_note"]:
        print(f"DPO: not trained: {result['dpo_note']}")
    for name, arm in result["arms"].items():
        loss = arm["final_loss"]
        print(f"\n{name}: {arm['adapter']} ({arm['kind']}, {arm['dataset']}, {arm['steps']} "
              f"steps, final loss {loss:.3f}); {arm['examples']} held-out tasks")  # fmt: skip
        print_report(arm, indent="  ")
    print(f"\n({result['minutes']} min; FORGE_HOME {result['home']})")


if __name__ == "__main__":
    raise SystemExit(main())
