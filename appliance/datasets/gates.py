"""Quality gates: a dataset version may be trained on only when its rows pass them.

Measured on the answers training would teach (SFT completions, DPO chosen answers):
answers that stopped at the token limit, runaway repetition, invalid JSON (every stage
answers in JSON), and empty answers.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence

from appliance.datasets.rows import DatasetRow

_RUN = re.compile(r"(.{8,80}?)\1{4,}", re.DOTALL)


def is_runaway(text: str) -> bool:
    """A short piece repeated five or more times in a row, or one line making up half of
    a long answer: the loop a small model falls into."""
    if _RUN.search(text):
        return True
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return len(lines) >= 6 and Counter(lines).most_common(1)[0][1] * 2 >= len(lines)


def is_empty(text: str) -> bool:
    try:
        value = json.loads(text)
    except ValueError:
        return not text.strip()
    if isinstance(value, dict):
        return all(v in ("", [], {}, None) for v in value.values())
    return value in ("", [], {}, None)


def is_invalid_json(text: str) -> bool:
    try:
        return not isinstance(json.loads(text), dict)
    except ValueError:
        return True


def measure(rows: Sequence[DatasetRow]) -> dict[str, float]:
    """Rates (0..1) of each problem over `rows`; 0 for an empty dataset."""
    total = len(rows) or 1
    answers = [r.answer for r in rows]
    return {
        "token_limit": sum(1 for r in rows if r.finish_reason == "length") / total,
        "runaway": sum(1 for a in answers if is_runaway(a)) / total,
        "invalid_json": sum(1 for a in answers if is_invalid_json(a)) / total,
        "empty": sum(1 for a in answers if is_empty(a)) / total,
    }


def check(rates: dict[str, float], limits: dict[str, float]) -> list[str]:
    """Why the dataset fails, one sentence per gate crossed; empty when it passes."""
    return [
        f"{name.replace('_', ' ')} rate {rates[name]:.1%} is not below the limit "
        f"{limit:.1%} (datasets.max_{name}_rate)"
        for name, limit in limits.items()
        if rates[name] >= limit
    ]
