"""Benchmark: the Forge SFT trainer against a plain PEFT training loop.

    .venv/bin/python bench/trainer_bench.py [--steps N] [--repeat R] [--threads T]
        [--seq-len L] [--checkpoint-every K] [--base DIR] [--json] [--check]

Both train the same LoRA (the default settings: r 8, all seven projections) on the same
training base, rows, row order and number of optimizer steps, each in a fresh child process
(so each has its own peak RSS). The trainer (`train_sft`) adds what the baseline lacks:
checkpoints, the NaN watchdog, metrics.jsonl; it also runs the lm_head only on the positions
that predict completion tokens. The baseline is the loop everyone writes:
`model(input_ids, labels=labels).loss`, AdamW, the same warmup + cosine, clipping.

tokens/s counts every token through the model (prompt and completion) over the training
loop's wall time (model loading excluded, checkpoints included). Runs alternate; medians
are compared. Goal: trainer ÷ baseline ≥ 0.95. Exit 0 whatever the results, unless --check
is given: then 1 when the goal is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RATIO_GOAL = 0.95
SYSTEM = "You are the scope stage of a code assistant. Reply with JSON only."
CODE = "".join(
    f"def op_{i}(a, b):\n    '''Operation {i} of the calculator.'''\n    return a + {i} * b\n\n"
    for i in range(12)
)
TASKS = [
    "Add subtraction",
    "Add multiplication",
    "Fix division by zero",
    "Add a power function",
    "Rename add to plus",
    "Add docstrings",
    "Add modulo",
    "Support floats",
]


@dataclass
class Row:
    name: str
    value: float
    unit: str
    ratio: float | None = None
    goal: str = ""
    ok: bool | None = None


def stage_rows(n_code_lines: int) -> list[dict]:
    """Stage-like rows: a task and some code as context, a short JSON answer."""
    code = "\n".join(CODE.splitlines()[:n_code_lines])
    return [
        {
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"Task: {task}.\n\nsrc/calc.py:\n```\n{code}\n```"},
            ],
            "completion": json.dumps({"files": ["src/calc.py"], "tests": [f"tests/test_{i}.py"]}),
        }
        for i, task in enumerate(TASKS)
    ]


def plain_peft_loop(base_dir: str, rows: list[dict], settings) -> dict:
    """The baseline: tokenised the same way, no checkpoints, no watchdog, no metrics file."""
    import torch
    from peft import get_peft_model
    from torch.optim.lr_scheduler import LambdaLR

    from appliance.training.batches import encode_sft_row, planned_steps, rows_for_step
    from appliance.training.devices import choose_device, torch_threads
    from appliance.training.lora import autocast, load_base, lora_config, peak_memory_bytes
    from appliance.training.sft import lr_factor

    with torch_threads(settings.threads):
        choice = choose_device()
        base, tokenizer = load_base(Path(base_dir), choice)
        torch.manual_seed(settings.seed)
        model = get_peft_model(base, lora_config(settings)).to(choice.device)
        encoded = [encode_sft_row(tokenizer, row, settings.max_seq_len) for row in rows]
        steps = planned_steps(len(rows), 1, settings.max_steps, settings.grad_accum)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=settings.lr)
        # The trainer's own warmup + cosine, so both runs learn the same thing.
        schedule = LambdaLR(optimizer, lambda step: lr_factor(step, steps, settings))
        model.train()
        tokens = 0
        started = time.perf_counter()
        for step in range(steps):
            step_loss = 0.0
            for [index] in rows_for_step(step, len(rows), 1, settings.grad_accum, settings.seed):
                row = encoded[index]
                ids = torch.tensor([row.input_ids], device=choice.device)
                labels = torch.tensor([row.labels], device=choice.device)
                with autocast(choice):
                    loss = model(input_ids=ids, labels=labels).loss / settings.grad_accum
                loss.backward()
                step_loss += loss.item()
                tokens += len(row.input_ids)
            torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - started
        return {
            "tokens_per_s": tokens / seconds,
            "peak_memory_bytes": peak_memory_bytes(choice),
            "final_loss": step_loss,  # mean of the last step's per-row mean losses
            "device": choice.reason,
        }


def _progress(message: str) -> None:
    print(f"… {message}", file=sys.stderr, flush=True)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _print_table(title: str, rows: list[Row]) -> None:
    head = f"  {'measure':<40} {'measured':>14} {'ratio':>8}  {'goal':<10} result"
    print(title)
    print(head)
    print("  " + "-" * (len(head) - 2))
    for row in rows:
        if row.unit == "B":
            value = f"{row.value / 2**20:.0f} MiB"
        else:
            value = f"{row.value:.1f} {row.unit}" if row.unit else f"{row.value:.4f}"
        ratio = "" if row.ratio is None else f"{row.ratio:.3f}×"
        result = "" if row.ok is None else ("PASS" if row.ok else "MISS")
        print(f"  {row.name:<40} {value:>14} {ratio:>8}  {row.goal:<10} {result}".rstrip())
    print()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Ratios are trainer / baseline, both from this run: above 1× is faster/larger.",
    )
    parser.add_argument("--steps", type=_positive, default=8, help="optimizer steps (default 8)")
    parser.add_argument("--repeat", type=_positive, default=2, help="run pairs (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--seq-len", type=_positive, default=1024, help="max_seq_len")
    parser.add_argument(
        "--code-lines", type=int, default=24, help="context lines per prompt (default 24)"
    )
    parser.add_argument(
        "--checkpoint-every", type=_positive, default=20, help="trainer checkpoints (default 20)"
    )
    parser.add_argument("--base", type=Path, help="an existing training base directory")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--check", action="store_true", help="exit 1 when the goal is missed")
    args = parser.parse_args()

    from appliance.config import TrainingSettings
    from appliance.training.runner import run_in_child

    settings = TrainingSettings(
        max_steps=args.steps,
        max_seq_len=args.seq_len,
        checkpoint_every=args.checkpoint_every,
        threads=args.threads,
    )
    rows = stage_rows(args.code_lines)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="forge-trainer-bench-") as tmpdir:
        tmp = Path(tmpdir)
        base = args.base
        if base is None:
            from appliance.models.default_model import shipped_gguf
            from appliance.models.hf_base import make_training_base

            _progress("making the training base of the shipped model")
            base = make_training_base(shipped_gguf(), tmp / "base")
        trainer, plain = [], []
        for i in range(args.repeat):
            _progress(f"pair {i + 1}/{args.repeat}: train_sft")
            result = run_in_child(
                "appliance.training.sft:train_sft",
                {"run_dir": tmp / f"run-{i}", "base_dir": base, "rows": rows, "settings": settings},
                tmp / "bench.log",
            )
            trainer.append(asdict(result))
            _progress(f"pair {i + 1}/{args.repeat}: plain PEFT loop")
            plain.append(
                run_in_child(
                    "trainer_bench:plain_peft_loop",
                    {"base_dir": str(base), "rows": rows, "settings": settings},
                    tmp / "bench.log",
                )
            )
        from transformers import AutoTokenizer

        from appliance.training.batches import encode_sft_row

        tokenizer = AutoTokenizer.from_pretrained(base)
        lengths = [len(encode_sft_row(tokenizer, r, args.seq_len).input_ids) for r in rows]

    def median(runs, key):
        return statistics.median(run[key] for run in runs)

    ratio = median(trainer, "tokens_per_s") / median(plain, "tokens_per_s")
    memory_ratio = median(trainer, "peak_memory_bytes") / median(plain, "peak_memory_bytes")
    table = [
        Row("plain PEFT loop: tokens/s", median(plain, "tokens_per_s"), "tok/s", 1.0),
        Row(
            "train_sft: tokens/s",
            median(trainer, "tokens_per_s"),
            "tok/s",
            ratio,
            f"≥ {RATIO_GOAL}",
            ratio >= RATIO_GOAL,
        ),
        Row("plain PEFT loop: peak memory", median(plain, "peak_memory_bytes"), "B", 1.0),
        Row("train_sft: peak memory", median(trainer, "peak_memory_bytes"), "B", memory_ratio),
        Row("plain PEFT loop: final step loss", median(plain, "final_loss"), ""),
        Row("train_sft: final step loss", median(trainer, "final_loss"), ""),
    ]
    elapsed = time.perf_counter() - started
    machine = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "device": trainer[0]["device"],
        "threads": args.threads,
        "elapsed_s": round(elapsed, 1),
    }
    data = {
        "steps": args.steps,
        "grad_accum": settings.grad_accum,
        "rows": len(rows),
        "tokens_per_row": {"min": min(lengths), "max": max(lengths)},
        "checkpoint_every": args.checkpoint_every,
    }
    missed = [row.name for row in table if row.ok is False]
    if args.json:
        report = {
            "machine": machine,
            "data": data,
            "rows": [asdict(row) for row in table],
            "runs": {"train_sft": trainer, "plain_peft_loop": plain},
            "goals_met": not missed,
        }
        print(json.dumps(report, indent=2, default=str, ensure_ascii=False))
    else:
        print(
            f"\n{machine['device']}; {machine['cpus']} CPUs, {args.threads} torch thread(s); "
            f"{args.steps} steps × {settings.grad_accum} rows of {min(lengths)}–{max(lengths)} "
            f"tokens; medians of {args.repeat} alternated runs\n"
        )
        _print_table("Trainer vs plain PEFT loop", table)
        verdict = "goal met" if not missed else f"goal MISSED: {', '.join(missed)}"
        print(f"{verdict} (whole benchmark: {elapsed:.0f} s)")
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
