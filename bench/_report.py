"""Formatting the benchmarks share: durations, ratios, progress lines, argument checks."""

from __future__ import annotations

import argparse
import sys


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def progress(message: str) -> None:
    print(f"… {message}", file=sys.stderr, flush=True)


def seconds(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"


def ratio(value: float | None) -> str:
    """A ratio to the baseline; below 0.1 written as 1/N× (N times faster)."""
    if value is None:
        return ""
    if value >= 0.095:
        return f"{value:.2f}×"
    return f"1/{1 / value:,.0f}×"
