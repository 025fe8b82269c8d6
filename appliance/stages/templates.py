"""The stages' prompt templates, read from prompts.toml beside this module."""

from __future__ import annotations

import functools
import tomllib
from pathlib import Path

PROMPTS = Path(__file__).with_name("prompts.toml")


@functools.cache
def templates() -> dict[str, dict]:
    return tomllib.loads(PROMPTS.read_text())


def messages(stage: str, **fields: str) -> list[dict]:
    """The chat messages of `stage` with its fields filled in."""
    template = templates()[stage]
    missing = set(template["fields"]) - set(fields)
    if missing:
        raise ValueError(f"stage {stage} needs {sorted(missing)}")
    return [
        {"role": "system", "content": template["system"].strip()},
        {"role": "user", "content": template["user"].format(**fields)},
    ]
