"""Experiment: does Grokfast speed up LoRA SFT on a real Forge stage dataset?

    .venv/bin/python bench/grokfast_experiment.py [--home DIR] [--commits N] [--stage S]
        [--steps K] [--seeds 0,1] [--lambda L] [--alpha A] [--eval-every E]
        [--heldout-every M] [--threads T] [--json]

The data is what Forge itself trains on: in a private FORGE_HOME (`--home`, made when it
holds no database yet) the demo package is ingested, a campaign runs on its first N commits
(one sample each) and `forge datasets build STAGE` makes the stage's SFT dataset, all
through the `forge` CLI. A home that already holds the campaign is reused: the campaign
resumes (nothing left to do) and the dataset is only rebuilt when there are new rows. A
fresh 24-commit campaign takes about half an hour on 2 cores; the four runs about 20 minutes.

The rows are split by task (commit): every M-th task in sha order is held out, so no commit
is on both sides. For each seed, two runs train the same LoRA (the default settings: r 8,
all seven projections, lr 2e-4, cosine) on the same rows in the same order for the same
steps, grokfast off (the baseline) and on; each in a fresh child process on `--threads`
torch threads. The training loss is the trainer's own metrics.jsonl; it is smoothed by a
trailing mean over one pass of the rows (one row a step, so single steps swing with the
row). The held-out loss is measured on the base model and on every E-th checkpoint.

Targets: the baseline's smoothed training loss at half of its steps, and at its end. The
table gives, per seed, the steps each run needs to reach them and the final and held-out
losses; ratios are grokfast / baseline of the same seed: below 1× fewer steps or lower loss.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _report import positive, progress  # noqa: E402

DEMO = ROOT / "repo_packages" / "demo"
# A campaign that makes the rows without spending the time on what they do not need: one gold
# run per commit (the rows come from the real commit and the logged prompts), short answers.
HOME_TOML = """[ingest]
quiet_seconds = 0
[harness]
gold_runs = 1
[campaign]
context_tokens = 512
max_tokens = 128
"""


@dataclass(frozen=True)
class Comparison:
    """Baseline and grokfast runs of one seed, reduced to the numbers the report gives."""

    seed: int
    target_half: float  # the baseline's smoothed training loss at half its steps
    target_end: float  # ... and at its last step
    steps_half: tuple[int | None, int | None]  # (baseline, grokfast); None: never reached
    steps_end: tuple[int | None, int | None]
    final_loss: tuple[float, float]  # smoothed training loss at the last step
    heldout_base: float  # held-out loss of the base model, before training
    heldout_end: tuple[float, float]
    heldout_best: tuple[float, float]  # the lowest held-out loss over the checkpoints
    heldout_best_step: tuple[int, int]
    mean_grad_norm: tuple[float, float]  # before clipping (after the filter, for grokfast)


# ---------------------------------------------------------------- the data


def _forge(home: Path, *args: str, capture: bool = True) -> str:
    """One `forge` command on `home`; its progress goes to stderr, never to --json's stdout."""
    env = {**os.environ, "FORGE_HOME": str(home)}
    env.pop("FORGE_CONFIG", None)
    out = subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE if capture else sys.stderr,
        stderr=sys.stderr,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"forge {' '.join(args)} failed (exit {out.returncode})")
    return out.stdout or ""


def stage_dataset(home: Path, stage: str, commits: int) -> tuple[list[dict], dict]:
    """The stage's latest SFT dataset version in `home` (its rows, its version record), made
    by a demo campaign on `commits` commits where the home does not hold one yet."""
    if not (home / "forge.db").is_file():
        if not (DEMO / "manifest.json").is_file():
            raise SystemExit(f"{DEMO} is missing: run ./install.sh (it builds the demo)")
        home.mkdir(parents=True, exist_ok=True)
        (home / "forge.toml").write_text(HOME_TOML)
        _forge(home, "init")
        _forge(home, "ingest", "--keep", str(DEMO))
    progress(f"campaign on {commits} demo commits (resumes; about a minute a new commit)")
    _forge(home, "campaign", "run", "demo", "--commits", str(commits), "--samples", "1",
           capture=False)  # fmt: skip
    _forge(home, "datasets", "build", stage)
    found = [
        v
        for v in json.loads(_forge(home, "datasets", "list", "--json"))
        if v["stage"] == stage and v["kind"] == "sft"
    ]
    if not found:
        raise SystemExit(f"the campaign made no {stage} SFT rows")
    version = max(found, key=lambda v: v["version"])
    # The JSONL export gives the rows whatever the gates said; the report says what they said.
    out = home / "datasets" / f"{stage}-grokfast-experiment.jsonl"
    _forge(home, "datasets", "export", stage, "--version", str(version["version"]), "-o", str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return rows, version


def split_by_task(rows: list[dict], every: int) -> tuple[list[dict], list[dict]]:
    """(train, held-out): every `every`-th task in sorted order is held out, whole."""
    tasks = sorted({row["task"] for row in rows})
    held = set(tasks[::every]) if len(tasks) > 1 else set()
    train = [r for r in rows if r["task"] not in held]
    heldout = [r for r in rows if r["task"] in held]
    assert not {r["task"] for r in train} & {r["task"] for r in heldout}
    if not train or not heldout:
        raise SystemExit(f"{len(tasks)} task(s): too few to hold some out; run more commits")
    return train, heldout


def trainer_row(row: dict) -> dict:
    return {"messages": row["messages"], "completion": row["completion"]}


# ---------------------------------------------------------------- one run (in a child)


def run_arm(run_dir: str, base_dir: str, rows: list[dict], heldout: list[dict], settings) -> dict:
    """Train with `settings`, then measure the held-out loss of the base and every checkpoint."""
    from peft import set_peft_model_state_dict

    from appliance.training.batches import encode_sft_row
    from appliance.training.checkpoints import list_checkpoints, load_state
    from appliance.training.devices import choose_device, torch_threads
    from appliance.training.lora import lora_model
    from appliance.training.sft import METRICS, mean_loss, train_sft

    started = time.perf_counter()
    result = train_sft(Path(run_dir), Path(base_dir), rows, settings)
    train_s = time.perf_counter() - started
    lines = [json.loads(line) for line in (Path(run_dir) / METRICS).read_text().splitlines()]
    curve = [line for line in lines if "event" not in line]
    with torch_threads(settings.threads):
        choice = choose_device()
        model, tokenizer = lora_model(Path(base_dir), settings, choice)
        encoded = [encode_sft_row(tokenizer, row, settings.max_seq_len) for row in heldout]
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        with model.disable_adapter():
            points = [{"step": 0, "loss": mean_loss(model, encoded, 1, pad_id, choice)}]
        for checkpoint in list_checkpoints(Path(run_dir)):
            set_peft_model_state_dict(model, load_state(checkpoint, choice.device)["adapter"])
            points.append(
                {"step": checkpoint.step, "loss": mean_loss(model, encoded, 1, pad_id, choice)}
            )
    return {
        "seed": settings.seed,
        "grokfast": settings.grokfast,
        "steps": result.steps,
        "recoveries": result.recoveries,
        "device": result.device,
        "tokens_per_s": result.tokens_per_s,
        "train_s": train_s,
        "curve": [
            {k: line[k] for k in ("step", "loss", "grad_norm", "lr", "tokens")} for line in curve
        ],
        "heldout": points,
    }


# ---------------------------------------------------------------- the analysis


def smoothed(losses: list[float], window: int) -> list[float | None]:
    """Trailing mean over `window` steps; None until a full window has passed."""
    out: list[float | None] = []
    for i in range(len(losses)):
        out.append(None if i + 1 < window else sum(losses[i + 1 - window : i + 1]) / window)
    return out


def steps_to(curve: list[float | None], target: float) -> int | None:
    """The first (1-based) step whose smoothed loss is at or below `target`."""
    for i, value in enumerate(curve):
        if value is not None and value <= target:
            return i + 1
    return None


def compare(baseline: dict, grokfast: dict, window: int) -> Comparison:
    base = smoothed([p["loss"] for p in baseline["curve"]], window)
    fast = smoothed([p["loss"] for p in grokfast["curve"]], window)
    half, end = base[len(base) // 2 - 1], base[-1]
    if half is None:
        raise SystemExit(f"--steps must be at least twice one pass over the rows ({window})")

    def best(run):
        point = min(run["heldout"], key=lambda p: p["loss"])
        return point["loss"], point["step"]

    def grad(run):
        return sum(p["grad_norm"] or 0.0 for p in run["curve"]) / len(run["curve"])

    (b_best, b_step), (f_best, f_step) = best(baseline), best(grokfast)
    return Comparison(
        seed=baseline["seed"],
        target_half=half,
        target_end=end,
        steps_half=(steps_to(base, half), steps_to(fast, half)),
        steps_end=(steps_to(base, end), steps_to(fast, end)),
        final_loss=(end, fast[-1]),
        heldout_base=baseline["heldout"][0]["loss"],
        heldout_end=(baseline["heldout"][-1]["loss"], grokfast["heldout"][-1]["loss"]),
        heldout_best=(b_best, f_best),
        heldout_best_step=(b_step, f_step),
        mean_grad_norm=(grad(baseline), grad(grokfast)),
    )


def _share(pair) -> float | None:
    base, fast = pair
    if base is None or fast is None or base == 0:
        return None
    return fast / base


def _value(value, unit: str) -> str:
    if value is None:
        return "never"
    return f"{value} steps" if unit == "steps" else f"{value:.4f}"


def print_report(comparisons: list[Comparison], runs: list[dict], steps: int) -> None:
    head = f"  {'measure':<44} {'baseline':>12} {'grokfast':>12} {'ratio':>8}"
    for c in comparisons:
        print(f"seed {c.seed}")
        print(head)
        print("  " + "-" * (len(head) - 2))
        lines = [
            (f"steps to train loss {c.target_half:.4f} (base @ {steps // 2})", c.steps_half,
             "steps"),
            (f"steps to train loss {c.target_end:.4f} (base @ {steps})", c.steps_end, "steps"),
            ("final train loss (mean of last pass)", c.final_loss, ""),
            ("held-out loss at the end", c.heldout_end, ""),
            ("best held-out loss over checkpoints", c.heldout_best, ""),
            ("  … at step", c.heldout_best_step, "steps"),
            ("mean gradient norm before clipping", c.mean_grad_norm, ""),
        ]  # fmt: skip
        print(f"  {'held-out loss before training (base model)':<44} {c.heldout_base:>12.4f}")
        for name, pair, unit in lines:
            b, f = (_value(v, unit) for v in pair)
            share = _share(pair)
            shown = "" if share is None else f"{share:.3f}×"
            print(f"  {name:<44} {b:>12} {f:>12} {shown:>8}")
        print()
    print("held-out loss at each checkpoint")
    arms = [f"{'grokfast' if r['grokfast'] else 'baseline'} s{r['seed']}" for r in runs]
    print("  " + f"{'step':>6}" + "".join(f"{a:>14}" for a in arms))
    for i, point in enumerate(runs[0]["heldout"]):
        losses = "".join(f"{r['heldout'][i]['loss']:>14.4f}" for r in runs)
        print(f"  {point['step']:>6}{losses}")
    print()


# ---------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Ratios are grokfast / baseline of the same seed, both from this run.",
    )
    parser.add_argument("--home", type=Path, help="private FORGE_HOME (default: a temp dir)")
    parser.add_argument("--commits", type=positive, default=24, help="demo commits (24)")
    parser.add_argument("--stage", default="scope", help="the stage's SFT dataset (scope)")
    parser.add_argument("--steps", type=positive, default=48, help="optimizer steps (48)")
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds (0,1)")
    parser.add_argument("--alpha", type=float, default=None, help="grokfast_alpha (default)")
    parser.add_argument("--lambda", dest="lamb", type=float, default=None,
                        help="grokfast_lambda (default)")  # fmt: skip
    parser.add_argument("--eval-every", type=positive, default=12, help="held-out every E steps")
    parser.add_argument("--heldout-every", type=positive, default=4, help="hold out 1 task in M")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]

    from appliance.config import TrainingSettings, load_config
    from appliance.models.hf_base import make_training_base
    from appliance.models.importing import training_base_dir
    from appliance.models.manifest import read_manifest
    from appliance.stages import STAGE_ROLES, STAGES
    from appliance.training.runner import run_in_child

    if args.stage not in STAGES:
        parser.error(f"unknown stage {args.stage!r}; stages: {', '.join(STAGES)}")
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="forge-grokfast-"))
    try:
        home = args.home or tmp / "home"
        rows, version = stage_dataset(home.resolve(), args.stage, args.commits)
        train, heldout = split_by_task(rows, args.heldout_every)
        if args.steps < 2 * len(train):  # the half-way target needs one whole pass before it
            parser.error(f"--steps must be at least {2 * len(train)}: twice the training rows")
        # The training base the way `forge train` finds it: the stage's role in models.toml.
        os.environ["FORGE_HOME"] = str(home.resolve())
        os.environ.pop("FORGE_CONFIG", None)
        gguf = read_manifest(load_config().models_manifest).for_role(STAGE_ROLES[args.stage])
        base_dir = make_training_base(gguf.path.resolve(), training_base_dir(gguf.path))
        grokfast = {"grokfast": True}
        if args.alpha is not None:
            grokfast["grokfast_alpha"] = args.alpha
        if args.lamb is not None:
            grokfast["grokfast_lambda"] = args.lamb
        runs: list[dict] = []
        for seed in seeds:
            for arm in ({"grokfast": False}, grokfast):
                settings = TrainingSettings(
                    max_steps=args.steps,
                    grad_accum=1,  # one row a step: the most optimizer steps for the time
                    threads=args.threads,
                    seed=seed,
                    checkpoint_every=args.eval_every,
                    keep_checkpoints=args.steps // args.eval_every + 1,
                    **arm,
                )
                name = f"{'grokfast' if arm['grokfast'] else 'baseline'}-s{seed}"
                progress(f"{name}: {args.steps} steps on {len(train)} rows")
                run = run_in_child(
                    "grokfast_experiment:run_arm",
                    {
                        "run_dir": str(tmp / name),
                        "base_dir": str(base_dir),
                        "rows": [trainer_row(r) for r in train],
                        "heldout": [trainer_row(r) for r in heldout],
                        "settings": settings,
                    },
                    tmp / "experiment.log",
                )
                runs.append(run | {"settings": settings.model_dump(exclude={"stages"})})
                shutil.rmtree(tmp / name)  # checkpoints: tens of MB each
        from transformers import AutoTokenizer

        from appliance.training.batches import encode_sft_row

        tokenizer = AutoTokenizer.from_pretrained(base_dir)
        lengths = [len(encode_sft_row(tokenizer, trainer_row(r), 1024).input_ids) for r in rows]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    comparisons = [compare(runs[i], runs[i + 1], window=len(train)) for i in range(0, len(runs), 2)]
    elapsed = time.perf_counter() - started
    first = runs[1]["settings"]
    machine = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "device": runs[0]["device"],
        "threads": args.threads,
        "elapsed_s": round(elapsed, 1),
        "train_s": [round(r["train_s"], 1) for r in runs],
    }
    data = {
        "dataset": f"{version['stage']}-sft-v{version['version']}",
        "status": version["status"],
        "reasons": version.get("reasons", []),
        "rows": len(rows),
        "tasks": len({r["task"] for r in rows}),
        "train_rows": len(train),
        "heldout_rows": len(heldout),
        "heldout_tasks": sorted({r["task"] for r in heldout}),
        "tokens_per_row": {"min": min(lengths), "max": max(lengths)},
        "steps": args.steps,
        "grokfast_alpha": first["grokfast_alpha"],
        "grokfast_lambda": first["grokfast_lambda"],
    }
    if args.json:
        report = {
            "machine": machine,
            "data": data,
            "comparisons": [asdict(c) for c in comparisons],
            "runs": runs,
        }
        print(json.dumps(report, indent=2, default=str, ensure_ascii=False))
        return 0
    print(
        f"\n{data['dataset']} ({data['status']}): {data['rows']} rows from {data['tasks']} "
        f"tasks, {data['train_rows']} train / {data['heldout_rows']} held-out rows "
        f"({len(data['heldout_tasks'])} tasks), {min(lengths)}–{max(lengths)} tokens a row\n"
        f"{machine['device']}; {machine['cpus']} CPUs, {args.threads} torch thread(s); "
        f"{args.steps} steps of 1 row; grokfast α {data['grokfast_alpha']} "
        f"λ {data['grokfast_lambda']}; train loss smoothed over {len(train)} steps\n"
    )
    print_report(comparisons, runs, args.steps)
    print(f"whole experiment: {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
