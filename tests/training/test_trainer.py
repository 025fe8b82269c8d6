"""The trainer on the real SmolLM2 training base: SFT, checkpoints and resume, the NaN
watchdog, DPO, the child-process runner, and the device decision."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest

from appliance.config import TrainingSettings
from appliance.errors import ForgeError, TrainingFailed
from appliance.training.batches import (
    IGNORE,
    encode_sft_row,
    join,
    pad_batch,
    planned_steps,
    rows_for_step,
)
from appliance.training.checkpoints import list_checkpoints
from appliance.training.devices import decide
from appliance.training.runner import log_step
from appliance.training.sft import METRICS, grokfast_filter, lr_factor, train_sft
from tests.conftest import OneTorchThread

# A stage-like dataset: varied tasks, one fixed JSON answer (what a scope stage might learn).
SYSTEM = "You are the scope stage of a code assistant. Reply with JSON only."
ANSWER = '{"files": ["src/calc.py"], "tests": ["tests/test_calc.py"]}'
TASKS = [
    "Add subtraction",
    "Add multiplication",
    "Fix division by zero",
    "Add a power function",
    "Rename add to plus",
    "Add docstrings",
    "Add modulo",
    "Support floats",
    "Add negation",
    "Add an absolute value function",
]


def sft_row(task: str, answer: str = ANSWER) -> dict:
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Task: {task} in the calculator."},
    ]
    return {"messages": messages, "completion": answer}


ROWS = [sft_row(t) for t in TASKS[:6]]
HELDOUT = [sft_row(t) for t in TASKS[6:]]
# Small and fast: 8 steps of 2 rows on one thread, a checkpoint every 2 steps.
SETTINGS = TrainingSettings(
    lr=2e-3,
    max_steps=8,
    grad_accum=2,
    max_seq_len=256,
    checkpoint_every=2,
    threads=1,
)


def step_lines(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / METRICS).read_text().splitlines()]
    return [line for line in lines if "event" not in line]


def event_lines(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / METRICS).read_text().splitlines()]
    return [line for line in lines if "event" in line]


@pytest.fixture(scope="module")
def reference_run(training_base, tmp_path_factory):
    """One uninterrupted SFT run; other tests compare against it."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    with OneTorchThread():
        result = train_sft(run_dir, training_base, ROWS, SETTINGS, heldout=HELDOUT)
    return run_dir, result


# ---------------------------------------------------------------- SFT


def test_sft_lowers_heldout_loss(reference_run):
    run_dir, result = reference_run
    assert result.steps == 8
    assert result.recoveries == 0 and result.resumed_from is None
    assert result.heldout_loss_base > 1.0
    assert result.heldout_loss < result.heldout_loss_base / 2, result
    assert (result.adapter_dir / "adapter_config.json").is_file()
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert result.tokens_per_s > 0 and result.peak_memory_bytes > 100 << 20
    curve = step_lines(run_dir)
    assert [line["step"] for line in curve] == list(range(1, 9))
    assert curve[-1]["loss"] < curve[0]["loss"]
    assert result.final_loss == curve[-1]["loss"]
    assert all(line["tokens"] > 0 and line["grad_norm"] > 0 for line in curve)


def test_adapter_config_is_the_settings(reference_run):
    _, result = reference_run
    config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["lora_alpha"] == 16
    assert set(config["target_modules"]) == set(SETTINGS.target_modules)
    assert config["task_type"] == "CAUSAL_LM"


def test_loss_is_on_the_completion_only(training_base):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(training_base)
    row = sft_row("Add subtraction")
    encoded = encode_sft_row(tokenizer, row, 256)
    prompt = tokenizer.apply_chat_template(
        row["messages"], add_generation_prompt=True, tokenize=False
    )
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    answer_ids = tokenizer(ANSWER, add_special_tokens=False).input_ids
    assert list(encoded.input_ids) == prompt_ids + answer_ids + [tokenizer.eos_token_id]
    assert encoded.labels == [IGNORE] * len(prompt_ids) + answer_ids + [tokenizer.eos_token_id]
    assert tokenizer.decode(encoded.input_ids[encoded.n_prompt :]) == ANSWER + "<|im_end|>"

    # A long prompt loses its start, never the completion.
    cut = encode_sft_row(tokenizer, row, len(answer_ids) + 11)
    assert len(cut.input_ids) == len(answer_ids) + 11
    assert list(cut.input_ids[: cut.n_prompt]) == prompt_ids[-10:]
    assert cut.labels[cut.n_prompt :] == answer_ids + [tokenizer.eos_token_id]

    # Padding goes on the left and is masked in the attention and the labels.
    short = join([5, 6], [7, 8], 16)
    batch = pad_batch([encoded, short], tokenizer.pad_token_id, "cpu")
    assert batch["labels"][1].tolist() == [IGNORE] * (len(encoded.input_ids) - 2) + [7, 8]
    assert batch["attention_mask"][1].sum() == 4
    assert batch["position_ids"][1, -4:].tolist() == [0, 1, 2, 3]
    assert batch["keep"] == encoded.n_completion + 1


def test_a_left_padded_batch_has_the_loss_of_its_rows(training_base):
    """Padding neither changes the loss nor leaks NaN from fully masked pad positions."""
    import torch

    from appliance.training.devices import decide
    from appliance.training.lora import completion_loss, load_base

    cpu = decide(False, None, False)
    model, tokenizer = load_base(training_base, cpu)
    rows = [
        encode_sft_row(tokenizer, sft_row("Add subtraction"), 256),
        encode_sft_row(
            tokenizer, sft_row("Fix division by zero when b is 0", '{"files": []}'), 256
        ),
    ]
    assert len(rows[0].input_ids) != len(rows[1].input_ids)
    with OneTorchThread(), torch.no_grad():
        alone = [completion_loss(model, pad_batch([r], 2, "cpu")) for r in rows]
        together, count = completion_loss(model, pad_batch(rows, 2, "cpu"))
    assert count == sum(n for _, n in alone) == sum(r.n_completion for r in rows)
    assert together.item() == pytest.approx(sum(loss.item() for loss, _ in alone), rel=1e-4)
    assert torch.isfinite(together)


def test_data_order_is_deterministic_and_covers_each_epoch():
    steps = planned_steps(6, 2, 0, 4)
    assert steps == 3
    order = [i for s in range(steps) for batch in rows_for_step(s, 6, 2, 2, 7) for i in batch]
    assert sorted(order[:6]) == list(range(6)) and sorted(order[6:12]) == list(range(6))
    assert order == [i for s in range(steps) for b in rows_for_step(s, 6, 2, 2, 7) for i in b]
    assert order != [i for s in range(steps) for b in rows_for_step(s, 6, 2, 2, 8) for i in b]


def test_lr_warms_up_then_follows_the_cosine():
    settings = TrainingSettings(warmup_ratio=0.1, lr=1.0)
    factors = [lr_factor(s, 20, settings) for s in range(20)]
    assert factors[:2] == [0.5, 1.0]
    assert factors[2] == 1.0 and all(a > b for a, b in zip(factors[2:], factors[3:], strict=False))
    assert 0 < factors[-1] < 0.01
    linear = TrainingSettings(warmup_ratio=0.0, schedule="linear")
    assert lr_factor(5, 10, linear) == pytest.approx(0.5)


def test_grokfast_adds_lambda_times_the_gradient_average():
    import torch

    param = torch.nn.Parameter(torch.zeros(2))
    param.grad = torch.tensor([1.0, -1.0])
    ema = grokfast_filter([param], None, 0.98, 2.0)
    assert param.grad.tolist() == [3.0, -3.0]  # g + 2·g: the average starts at g
    param.grad = torch.tensor([0.0, 1.0])
    ema = grokfast_filter([param], ema, 0.98, 2.0)
    assert ema[0].tolist() == pytest.approx([0.98, -0.96])
    assert param.grad.tolist() == pytest.approx([1.96, 1.0 - 1.92])


def test_sft_with_grokfast_and_padded_batches_trains_and_resumes(training_base, tmp_path):
    settings = SETTINGS.model_copy(
        update={"grokfast": True, "max_steps": 2, "grad_accum": 1, "batch_size": 2}
    )
    with OneTorchThread():
        result = train_sft(tmp_path / "run", training_base, ROWS, settings)
        again = train_sft(tmp_path / "run", training_base, ROWS, settings)
    assert result.steps == 2 and math.isfinite(result.final_loss)
    assert all(math.isfinite(line["grad_norm"]) for line in step_lines(tmp_path / "run"))
    assert again.resumed_from == 2 and again.final_loss == result.final_loss


# ---------------------------------------------------------------- checkpoints and resume


def test_three_checkpoints_are_kept(reference_run):
    run_dir, _ = reference_run
    kept = list_checkpoints(run_dir)
    assert [c.step for c in kept] == [4, 6, 8]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "step-4",
        "step-6",
        "step-8",
    ]  # no temporary directories left behind
    assert kept[-1].info["rows_seen"] == 8 * 2
    assert kept[-1].info["lr_scale"] == 1.0 and kept[-1].info["recoveries"] == 0


class Killed(KeyboardInterrupt):
    pass


def test_killed_run_resumes_where_it_stopped(training_base, tmp_path, reference_run):
    _, reference = reference_run
    reference_curve = step_lines(reference_run[0])
    run_dir = tmp_path / "run"

    def kill_after_5(record):
        if record.step == 5:
            raise Killed

    with OneTorchThread(), pytest.raises(Killed):
        train_sft(run_dir, training_base, ROWS, SETTINGS, on_step=kill_after_5)
    assert [c.step for c in list_checkpoints(run_dir)] == [2, 4]
    assert [line["step"] for line in step_lines(run_dir)] == [1, 2, 3, 4, 5]

    with OneTorchThread():
        result = train_sft(run_dir, training_base, ROWS, SETTINGS, heldout=HELDOUT)
    assert result.resumed_from == 4
    assert result.steps == reference.steps == 8
    curve = step_lines(run_dir)
    assert [line["step"] for line in curve] == list(range(1, 9))  # step 5 redone, once
    # Same data order, schedule and optimizer state: the curve is the uninterrupted one.
    for line, expected in zip(curve, reference_curve, strict=True):
        assert line["lr"] == pytest.approx(expected["lr"])
        assert line["loss"] == pytest.approx(expected["loss"], rel=1e-4, abs=1e-5)
    assert result.heldout_loss == pytest.approx(reference.heldout_loss, rel=1e-3)
    assert event_lines(run_dir) == [{"event": "resumed", "step": 4}]


def test_a_finished_run_is_not_trained_again(training_base, reference_run):
    run_dir, reference = reference_run
    with OneTorchThread():
        again = train_sft(run_dir, training_base, ROWS, SETTINGS)
    assert again.resumed_from == 8 and again.steps == 8
    assert again.final_loss == reference.final_loss


def test_resume_refuses_a_run_with_other_settings(training_base, reference_run):
    run_dir, _ = reference_run
    with pytest.raises(ForgeError, match="other rows, base or settings"):
        train_sft(run_dir, training_base, ROWS, SETTINGS.model_copy(update={"lr": 1e-3}))


# ---------------------------------------------------------------- watchdog


def nan_loss_at(monkeypatch, passes: set[int] | None) -> list[int]:
    """Make the trainer's loss NaN at these 1-based forward passes (None: at every pass);
    the passes so far come back in the list. With grad_accum 1 a pass is an optimizer step.
    The fault is injected here, in the test, around the trainer's real loss function."""
    from appliance.training import sft

    real = sft.completion_loss
    seen: list[int] = []

    def completion_loss(model, batch):
        seen.append(len(seen) + 1)
        loss_sum, count = real(model, batch)
        if passes is None or seen[-1] in passes:
            loss_sum = loss_sum * float("nan")
        return loss_sum, count

    monkeypatch.setattr(sft, "completion_loss", completion_loss)
    return seen


def test_nan_is_recovered_from_the_last_checkpoint_with_a_tenth_of_the_lr(
    training_base, tmp_path, monkeypatch
):
    settings = SETTINGS.model_copy(update={"max_steps": 4, "grad_accum": 1})
    passes = nan_loss_at(monkeypatch, {3})
    run_dir = tmp_path / "run"
    with OneTorchThread():
        result = train_sft(run_dir, training_base, ROWS, settings)
    assert passes == [1, 2, 3, 4, 5]  # step 3 twice: NaN, then again after the rollback
    assert result.recoveries == 1 and result.steps == 4
    assert math.isfinite(result.final_loss)
    [event] = event_lines(run_dir)
    assert event["event"] == "recovered"
    assert (event["step"], event["failed_step"], event["lr_scale"]) == (2, 3, 0.1)
    curve = step_lines(run_dir)
    assert [line["step"] for line in curve] == [1, 2, 3, 4]
    for line in curve:
        scale = 1.0 if line["step"] <= 2 else 0.1
        expected = settings.lr * scale * lr_factor(line["step"] - 1, 4, settings)
        assert line["lr"] == pytest.approx(expected)
    assert list_checkpoints(run_dir)[-1].info["recoveries"] == 1


def test_nan_every_step_fails_after_three_recoveries(training_base, tmp_path, monkeypatch):
    settings = SETTINGS.model_copy(update={"max_steps": 4, "grad_accum": 1})
    run_dir = tmp_path / "run"
    nan_loss_at(monkeypatch, None)
    with OneTorchThread(), pytest.raises(TrainingFailed) as failure:
        train_sft(run_dir, training_base, ROWS, settings)
    message = str(failure.value)
    assert "diverged at step 1 of 4" in message and "after 3 recoveries" in message
    events = event_lines(run_dir)
    assert [e["recoveries"] for e in events] == [1, 2, 3]
    assert [e["lr_scale"] for e in events] == pytest.approx([0.1, 0.01, 0.001])
    assert not (run_dir / "adapter").exists()


# ---------------------------------------------------------------- devices


@pytest.mark.parametrize(
    "cuda, capability, unsloth, expected",
    [
        (False, None, False, ("cpu", "fp32", False)),
        (False, None, True, ("cpu", "fp32", False)),
        (True, (6, 1), False, ("cuda", "fp16", False)),  # Pascal P40: no bf16
        (True, (6, 1), True, ("cuda", "fp16", False)),  # nor Unsloth
        (True, (7, 0), False, ("cuda", "fp16", False)),
        (True, (7, 5), True, ("cuda", "fp16", True)),
        (True, (8, 0), False, ("cuda", "bf16", False)),
        (True, (9, 0), True, ("cuda", "bf16", True)),
    ],
)
def test_device_decision(cuda, capability, unsloth, expected):
    choice = decide(cuda, capability, unsloth)
    assert (choice.device, choice.dtype, choice.unsloth) == expected
    assert choice.dtype in choice.reason


def test_device_reason_says_why_unsloth_is_not_used():
    assert "needs compute capability ≥ 7.0, not 6.1" in decide(True, (6, 1), True).reason
    assert "not installed" in decide(True, (8, 6), False).reason


# ---------------------------------------------------------------- DPO

GOOD = ANSWER
BAD = "You should probably edit some of the files, maybe calc."
DPO_ROWS = [
    {"prompt": sft_row(task)["messages"], "chosen": GOOD, "rejected": BAD} for task in TASKS[:4]
]
DPO_SETTINGS = TrainingSettings(
    lr=1e-3, max_steps=3, batch_size=2, grad_accum=1, warmup_ratio=0.0, max_seq_len=256, threads=1
)


def test_dpo_from_the_base_moves_the_margin_to_chosen(training_base, tmp_path):
    from appliance.training.dpo import train_dpo

    run_dir = tmp_path / "dpo"
    with OneTorchThread():
        result = train_dpo(run_dir, training_base, DPO_ROWS, DPO_SETTINGS)
    assert result.steps == 3
    assert result.margin_after > result.margin_before + 1.0, result
    curve = step_lines(run_dir)
    assert [line["step"] for line in curve] == [1, 2, 3]
    assert curve[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)  # policy = reference
    assert curve[-1]["loss"] < curve[0]["loss"]
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert not (result.adapter_dir / "ref").exists()


def test_dpo_from_the_sft_adapter_starts_there(training_base, tmp_path, reference_run):
    from appliance.training.dpo import train_dpo

    _, sft = reference_run
    # One step, with warmup: the SFT loop's schedule gives it the full learning rate (the HF
    # schedule's warmup would start at 0 and the step would change nothing).
    settings = DPO_SETTINGS.model_copy(update={"max_steps": 1, "warmup_ratio": 0.5})
    with OneTorchThread():
        result = train_dpo(
            tmp_path / "dpo", training_base, DPO_ROWS, settings, reference=sft.adapter_dir
        )
    # The policy starts as the SFT adapter, which already prefers the JSON answer, and the
    # reference is that same adapter: the first DPO loss is log 2.
    assert result.margin_before > 10
    first = step_lines(tmp_path / "dpo")[0]
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert first["lr"] == pytest.approx(settings.lr)
    assert result.margin_after > result.margin_before


def test_dpo_resumes_from_the_newest_checkpoint_it_finished_writing(tmp_path):
    from appliance.training.dpo import last_complete_checkpoint

    trainer = tmp_path / "trainer"
    assert last_complete_checkpoint(trainer) is None
    for step, state in ((2, '{"global_step": 2}'), (4, '{"global_step": 4}'), (6, None),
                        (8, '{"global_')):  # fmt: skip
        folder = trainer / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(b"weights")
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
    # 8 was cut off while its state was written, 6 before: both go, 4 is resumed from.
    assert last_complete_checkpoint(trainer) == str(trainer / "checkpoint-4")
    assert sorted(p.name for p in trainer.iterdir()) == ["checkpoint-2", "checkpoint-4"]


# ---------------------------------------------------------------- child process


def log_then_die_after_step_2(record) -> None:
    """The child's on_step: log the step as the runner does, then die by SIGKILL once
    step 2 is checkpointed and logged, before step 3 starts."""
    log_step(record)
    if record.step == 2:
        os.kill(os.getpid(), signal.SIGKILL)


def test_child_run_killed_then_resumed(training_base, tmp_path):
    from appliance.training.runner import run_in_child

    settings = SETTINGS.model_copy(update={"max_steps": 4, "grad_accum": 1})
    kwargs = {"run_dir": tmp_path / "run", "base_dir": training_base, "rows": ROWS}
    log = tmp_path / "train.log"
    with pytest.raises(TrainingFailed) as failure:
        run_in_child(
            "appliance.training.sft:train_sft",
            {**kwargs, "settings": settings, "on_step": log_then_die_after_step_2},
            log,
        )
    assert "died (signal SIGKILL)" in str(failure.value)
    assert "step 2/4 loss" in str(failure.value)  # the last lines of the log

    result = run_in_child("appliance.training.sft:train_sft", {**kwargs, "settings": settings}, log)
    assert result.resumed_from == 2 and result.steps == 4
    assert "step 4/4 loss" in log.read_text()


def test_child_error_comes_back_as_training_failed(tmp_path):
    from appliance.training.runner import run_in_child

    with pytest.raises(TrainingFailed, match="ForgeError: no rows to train on"):
        run_in_child(
            "appliance.training.sft:train_sft",
            {"run_dir": tmp_path, "base_dir": tmp_path, "rows": [], "settings": SETTINGS},
            tmp_path / "train.log",
        )
    assert "Traceback" in (tmp_path / "train.log").read_text()
