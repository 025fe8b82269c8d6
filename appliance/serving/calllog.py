"""The call log: one database row per model call, written as the call ends.

The pool is used from several threads and a SQLite connection belongs to one, so each
thread that logs gets its own connection to the same database file.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from appliance.clock import now_iso
from appliance.serving.pool import ModelCall
from appliance.store import connect


class CallLog:
    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
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
            "duration_s, error, extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            ],
        )
        return cursor.lastrowid
