"""Answers from elsewhere: the evaluation examples written out for any answerer (a teacher
model, a colleague, a script), and a file of their answers read back, checked, for the
same metrics, baselines and gate the adapters get. Nothing here touches the registry.

An exported line holds what an answerer may see — the stage's structured input, the chat
messages and prompt the stage's model is given, and the answer's JSON schema — never
the target.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import UsageError
from appliance.evaluation.examples import Example

MAX_ANSWERS_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Answer:
    """One example's answer: the text as given, and the JSON object in it (None: unusable)."""

    id: str
    raw: str
    output: dict | None


@dataclass(frozen=True)
class AnswerSet:
    """A checked answers file: the answers by example id, and the ids it lacks (each scored
    as an unusable answer)."""

    path: str
    answers: dict[str, Answer]
    missing: tuple[str, ...]


def example_line(example: Example, messages: list[dict], prompt: str) -> dict:
    """The exported form of one example: everything an answerer may see, no target."""
    return {
        "id": example.key,
        "stage": example.stage,
        "input": example.input,
        "messages": messages,
        "prompt": prompt,
        "schema": example.schema,
    }


def write_examples(lines: Iterable[dict], out: Path) -> int:
    """Write exported examples as JSONL (atomically); the number written."""
    lines = list(lines)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("".join(json.dumps(line, sort_keys=True) + "\n" for line in lines))
    tmp.replace(out)
    return len(lines)


def read_answers(path: Path, ids: Iterable[str]) -> AnswerSet:
    """The answers in `path` (JSONL of {"id", "answer"}), checked against the example ids:
    an unreadable line, an unknown or repeated id is refused with its line number; an id
    without an answer is listed in `missing`."""
    ids = list(ids)
    known = set(ids)
    text = _read_text(path)
    answers: dict[str, Answer] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        answer = _parse_line(path, number, line)
        if answer.id not in known:
            raise UsageError(
                f"{path}:{number}: no evaluation example has the id {answer.id!r}",
                "answer the examples of this evaluation set: export them again with "
                "forge eval STAGE --export-examples FILE",
            )
        if answer.id in answers:
            raise UsageError(f"{path}:{number}: a second answer for {answer.id!r}",
                             "give one answer per example")  # fmt: skip
        answers[answer.id] = answer
    missing = tuple(i for i in ids if i not in answers)
    return AnswerSet(str(path), answers, missing)


def _read_text(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_ANSWERS_BYTES:
            raise UsageError(
                f"{path} is {size} bytes; an answers file may hold at most {MAX_ANSWERS_BYTES}",
                "answer one stage's examples per file",
            )
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist", "give the JSONL file of answers") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a folder", "give the JSONL file of answers") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})",
                         "write the answers as UTF-8 JSON lines") from None  # fmt: skip


def _parse_line(path: Path, number: int, line: str) -> Answer:
    where = f"{path}:{number}"
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise UsageError(
            f"{where}: not JSON ({exc})", 'each line is {"id": ..., "answer": ...}'
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) or "answer" not in data:
        raise UsageError(f"{where}: a line must be an object with a string id and an answer",
                         'each line is {"id": ..., "answer": ...}')  # fmt: skip
    answer = data["answer"]
    if isinstance(answer, dict):
        return Answer(data["id"], json.dumps(answer), answer)
    if isinstance(answer, str):  # the answer as the model would write it: JSON in text
        try:
            parsed = json.loads(answer)
        except ValueError:
            parsed = None
        return Answer(data["id"], answer, parsed if isinstance(parsed, dict) else None)
    if answer is None:
        return Answer(data["id"], "", None)
    raise UsageError(f"{where}: the answer must be a JSON object, a string or null",
                     f"found {type(answer).__name__}")  # fmt: skip
