"""JSON schemas the stages' outputs are constrained to at generation time.

Lists are capped (`maxItems`): a small model fills a schema by repeating items
(seen with SmolLM2-135M), and the caps keep that finite. Strings carry no `maxLength`:
llama.cpp turns a length bound into one grammar rule per character, and long bounds
crashed its sampler (a segmentation fault with maxLength 2000); `max_tokens` bounds the
answer instead.
"""

from __future__ import annotations

from collections.abc import Sequence

PATH = {"type": "string"}
MAX_LABELS = 32  # labels one answer may give; the grammar grows with the bound


def task_analysis() -> dict:
    return {
        "type": "object",
        "properties": {
            "summary": {"type": "string"},
            "kind": {"type": "string", "enum": ["feature", "bugfix", "refactor", "tests", "docs"]},
            "files": {"type": "array", "items": PATH, "minItems": 1, "maxItems": 5},
        },
        "required": ["summary", "kind", "files"],
    }


def scope(candidates: Sequence[str]) -> dict:
    return {
        "type": "object",
        "properties": {
            "files": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "path": {"type": "string", "enum": list(candidates)},
                        "label": {
                            "type": "string",
                            "enum": ["relevant", "supporting", "irrelevant"],
                        },
                    },
                    "required": ["path", "label"],
                },
                "minItems": 1,
                "maxItems": max(1, min(len(candidates), MAX_LABELS)),
            }
        },
        "required": ["files"],
    }


def precision(symbols: Sequence[str]) -> dict:
    return {
        "type": "object",
        "properties": {
            "symbols": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "symbol": {"type": "string", "enum": list(symbols)},
                        "label": {"type": "string", "enum": ["primary", "supporting", "excluded"]},
                    },
                    "required": ["symbol", "label"],
                },
                "minItems": 1,
                "maxItems": max(1, min(len(symbols), MAX_LABELS)),
            }
        },
        "required": ["symbols"],
    }


def plan() -> dict:
    return {
        "type": "object",
        "properties": {
            "parts": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer", "minimum": 1, "maximum": 9},
                        "title": {"type": "string"},
                        "depends_on": {
                            "type": "array",
                            "items": {"type": "integer", "minimum": 1, "maximum": 9},
                            "maxItems": 3,
                        },
                    },
                    "required": ["id", "title", "depends_on"],
                },
                "minItems": 1,
                "maxItems": 4,
            },
            "steps": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "part": {"type": "integer", "minimum": 1, "maximum": 9},
                        "file": PATH,
                        "action": {"type": "string"},
                    },
                    "required": ["part", "file", "action"],
                },
                "minItems": 1,
                "maxItems": 6,
            },
            "test_plan": {
                "type": "array",
                "items": {"type": "string"},
                "maxItems": 4,
            },
        },
        "required": ["parts", "steps", "test_plan"],
    }


def code() -> dict:
    return {
        "type": "object",
        "properties": {
            "edits": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "path": PATH,
                        "search": {"type": "string"},
                        "replace": {"type": "string"},
                    },
                    "required": ["path", "search", "replace"],
                },
                "minItems": 1,
                "maxItems": 4,
            }
        },
        "required": ["edits"],
    }
