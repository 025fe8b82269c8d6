"""How training rows become tensors: the chat template, completion-only labels, padding,
and the data order (a pure function of the seed and the step, so a resumed run sees the
same batches an uninterrupted one would have).

An SFT row is `{"messages": [{"role", "content"}, ...], "completion": str}`: the messages
exactly as the model saw them, and the answer it should have given.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from functools import lru_cache

from appliance.errors import ForgeError

IGNORE = -100  # the label PyTorch's cross entropy skips


@dataclass(frozen=True)
class EncodedRow:
    input_ids: tuple[int, ...]
    n_prompt: int  # the first n_prompt tokens are context: no loss on them

    @property
    def labels(self) -> list[int]:
        return [IGNORE] * self.n_prompt + list(self.input_ids[self.n_prompt :])

    @property
    def n_completion(self) -> int:
        return len(self.input_ids) - self.n_prompt


def check_sft_rows(rows: list[dict], what: str = "rows") -> None:
    """Raise ForgeError naming the first row that is not {"messages": [...], "completion"}."""
    if not rows:
        raise ForgeError(f"no {what} to train on")
    for i, row in enumerate(rows):
        messages = row.get("messages") if isinstance(row, dict) else None
        if not isinstance(messages, list) or not messages:
            raise ForgeError(f"{what}[{i}] has no 'messages' list", "see batches.py for the shape")
        for message in messages:
            if not (
                isinstance(message, dict)
                and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)
            ):
                raise ForgeError(f"{what}[{i}] has a message without string role and content")
        if not isinstance(row.get("completion"), str) or not row["completion"]:
            raise ForgeError(f"{what}[{i}] has no 'completion' text")


def prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """The prompt as the served model sees it: the chat template up to the assistant turn."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False).input_ids


def completion_ids(tokenizer, completion: str) -> list[int]:
    # Tokenised apart from the prompt, as llama.cpp generates it after the prompt's tokens.
    return tokenizer(completion, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]


def encode_sft_row(tokenizer, row: dict, max_seq_len: int) -> EncodedRow:
    """Prompt + completion + eos, cut to max_seq_len from the prompt's start."""
    return join(
        prompt_ids(tokenizer, row["messages"]),
        completion_ids(tokenizer, row["completion"]),
        max_seq_len,
    )


def join(prompt: list[int], completion: list[int], max_seq_len: int) -> EncodedRow:
    # The completion keeps its start (at most max_seq_len - 1 tokens), and the prompt
    # keeps its end: the instruction nearest the answer matters most.
    completion = completion[: max_seq_len - 1]
    prompt = prompt[max(0, len(prompt) + len(completion) - max_seq_len) :]
    return EncodedRow(tuple(prompt + completion), len(prompt))


def pad_batch(rows: list[EncodedRow], pad_id: int, device) -> dict:
    """Left-padded tensors: every row's completion ends at the last position, so the loss
    needs logits only for the last `keep` positions (see lora.completion_loss)."""
    # torch: loaded only by the process that trains or embeds, not by every importer
    import torch

    length = max(len(r.input_ids) for r in rows)
    ids, mask, labels = [], [], []
    for r in rows:
        pad = length - len(r.input_ids)
        ids.append([pad_id] * pad + list(r.input_ids))
        mask.append([0] * pad + [1] * len(r.input_ids))
        labels.append([IGNORE] * pad + r.labels)
    attention = torch.tensor(mask, device=device)
    return {
        "input_ids": torch.tensor(ids, device=device),
        "attention_mask": attention,
        "position_ids": (attention.cumsum(1) - 1).clamp(min=0),
        "labels": torch.tensor(labels, device=device),
        "keep": max(r.n_completion for r in rows) + 1,
        "tokens": sum(len(r.input_ids) for r in rows),
    }


def planned_steps(n_rows: int, epochs: int, max_steps: int, rows_per_step: int) -> int:
    """Optimizer steps of a run: max_steps, or enough for `epochs` passes over the rows."""
    return max_steps or math.ceil(n_rows * epochs / rows_per_step)


def rows_for_step(step: int, n_rows: int, batch_size: int, grad_accum: int, seed: int):
    """The micro-batches (lists of row indices) of 0-based optimizer step `step`.

    The rows form one stream: epoch after epoch, each shuffled by (seed, epoch).
    """
    per_step = batch_size * grad_accum
    stream = [
        _epoch_order(n_rows, seed, position // n_rows)[position % n_rows]
        for position in range(step * per_step, (step + 1) * per_step)
    ]
    return [stream[i : i + batch_size] for i in range(0, per_step, batch_size)]


@lru_cache(maxsize=64)
def _epoch_order(n_rows: int, seed: int, epoch: int) -> tuple[int, ...]:
    order = list(range(n_rows))
    random.Random(f"forge-sft-{seed}-{epoch}").shuffle(order)
    return tuple(order)
