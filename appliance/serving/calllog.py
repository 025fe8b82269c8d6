"""The call log: one database row per model call, written as the call ends.

This module owns the table `model_calls` (m003_model_calls, m017_call_source in
appliance/store/migrations.py):
it alone writes it (`CallLog`) and reads it (`calls`); a call crosses every border as a
frozen `ModelCall`. The pool imports this module, never the other way round.

The pool is used from several threads and a SQLite connection belongs to one, so each
thread that logs gets its own connection to the same database file.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from appliance.clock import now_iso
from appliance.records import from_row
from appliance.store import connect, transaction

SERVED = "serve"  # the source of a call `forge serve` made for a client
SOLVED = "solve"  # the source of a call `forge solve` made for an operator's task


@dataclass(frozen=True)
class ModelCall:
    """One row of the call log: made by the pool as the call ends, or read back by id."""

    kind: str  # chat | completion | judge
    role: str
    base: str
    base_sha256: str
    adapter: str | None
    prompt: str
    params: dict
    messages: list | None = None
    output: str = ""
    finish_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    duration_s: float = 0.0
    error: str | None = None
    extra: dict = field(default_factory=dict)
    id: int | None = None  # the row's id, once logged
    source: str | None = None  # who asked: None for Forge's own work, "serve", "solve"


class CallLog:
    """Writes each call as a row, stamped with `source` (None: Forge's own work; "serve":
    a request to `forge serve`, which no dataset ever takes; "solve": `forge solve`, whose
    calls reach a dataset only through the operator's feedback on the run)."""

    def __init__(self, db_path: Path, source: str | None = None) -> None:
        self.db_path = db_path
        self.source = source
        self._local = threading.local()

    def _db(self):
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = connect(self.db_path)
        return db

    def __call__(self, call: ModelCall) -> int:
        cursor = self._db().conn.execute(
            "INSERT INTO model_calls (at, kind, role, base, base_sha256, adapter, messages, "
            "prompt, params, output, finish_reason, prompt_tokens, completion_tokens, "
            "duration_s, error, extra, source) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                now_iso("milliseconds"),
                call.kind,
                call.role,
                call.base,
                call.base_sha256,
                call.adapter,
                json.dumps(call.messages) if call.messages is not None else None,
                call.prompt,
                json.dumps(call.params),
                call.output,
                call.finish_reason,
                call.prompt_tokens,
                call.completion_tokens,
                call.duration_s,
                call.error,
                json.dumps(call.extra),
                self.source,
            ],
        )
        return cursor.lastrowid


_JSON_COLUMNS = ("messages", "params", "extra")
_COLUMNS = (
    "id, kind, role, base, base_sha256, adapter, messages, prompt, params, output, "
    "finish_reason, prompt_tokens, completion_tokens, duration_s, error, extra, source"
)


def calls(db, ids: Iterable[int | None]) -> dict[int, ModelCall]:
    """The logged calls with these ids (None and unknown ids left out), by id."""
    wanted = sorted({i for i in ids if i is not None})
    if not wanted:
        return {}
    marks = ",".join("?" * len(wanted))
    cursor = db.execute(f"SELECT {_COLUMNS} FROM model_calls WHERE id IN ({marks})", wanted)
    names = [c[0] for c in cursor.description]
    found = [
        from_row(ModelCall, dict(zip(names, row, strict=True)), json_columns=_JSON_COLUMNS)
        for row in cursor.fetchall()
    ]
    return {call.id: call for call in found}


@dataclass(frozen=True)
class Compaction:
    """Calls of the log older than a cutoff that nothing refers to: how many, their text."""

    rows: int
    bytes: int  # the text they hold (prompt, messages, output): pages SQLite reuses

    def to_dict(self) -> dict:
        return {"rows": self.rows, "bytes": self.bytes}


def compact(db, before: str, keep: Iterable[int], *, dry_run: bool = False) -> Compaction:
    """Delete the calls logged before `before` (ISO time) whose id is not in `keep`; with
    `dry_run`, only count them. The file does not shrink: SQLite reuses the pages."""
    db.execute("CREATE TEMP TABLE IF NOT EXISTS calllog_keep (id INTEGER PRIMARY KEY)")
    try:
        db.execute("DELETE FROM temp.calllog_keep")
        db.conn.executemany(
            "INSERT OR IGNORE INTO temp.calllog_keep (id) VALUES (?)", ((i,) for i in keep)
        )
        where = "at < ? AND id NOT IN (SELECT id FROM temp.calllog_keep)"
        rows, size = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(prompt) + LENGTH(COALESCE(messages, '')) "
            f"+ LENGTH(output) + LENGTH(params)), 0) FROM model_calls WHERE {where}",
            [before],
        ).fetchone()
        if not dry_run and rows:
            with transaction(db):
                db.execute(f"DELETE FROM model_calls WHERE {where}", [before])
        return Compaction(rows, size)
    finally:
        db.execute("DROP TABLE IF EXISTS temp.calllog_keep")
