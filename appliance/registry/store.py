"""The registry's two tables, and the only SQL that names them: `adapters` (every trained
version of a stage: its status, its file, whether it can be served on the current base)
and `adapter_events` (every change of what is in service, oldest first).

Rows become frozen records here, read by column name, one conversion each; every other
module works with the records. `db` is a sqlite-utils database or, inside a transaction,
its raw connection: both have `execute`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from appliance.clock import now_iso
from appliance.records import as_json, from_row

# The tables: m007_adapters and m008_registry (the servable columns, the one-active index,
# the triggers, adapter_events) in appliance/store/migrations.py.

VERSION_COLUMNS = (
    "stage, version, kind, status, dataset, base, base_sha256, metrics, path, sha256, created_at"
)


@dataclass(frozen=True)
class AdapterVersion:
    stage: str
    version: int
    kind: str
    status: str
    dataset: str
    base: str
    base_sha256: str
    metrics: dict
    path: str
    sha256: str
    created_at: str

    @classmethod
    def from_row(cls, row: Mapping) -> AdapterVersion:
        return from_row(cls, row, json_columns=("metrics",))

    @property
    def name(self) -> str:
        return name_of(self.stage, self.version)

    def to_dict(self) -> dict:
        return as_json(self, name=self.name)


@dataclass(frozen=True)
class RegisteredAdapter:
    """An adapter version and whether it can be served on the base its stage uses now."""

    adapter: AdapterVersion
    servable: bool
    unservable_reason: str | None

    @classmethod
    def from_row(cls, row: Mapping) -> RegisteredAdapter:
        return cls(AdapterVersion.from_row(row), bool(row["servable"]), row["unservable_reason"])

    @property
    def name(self) -> str:
        return self.adapter.name

    def to_dict(self) -> dict:
        return self.adapter.to_dict() | as_json(self, "servable", "unservable_reason")


@dataclass(frozen=True)
class AdapterEvent:
    """A promotion, rejection, rollback or invalidation. A version None is the base."""

    id: int
    stage: str
    action: str
    from_version: int | None
    to_version: int | None
    forced: bool
    decision_id: int | None
    note: str
    at: str

    @classmethod
    def from_row(cls, row: Mapping) -> AdapterEvent:
        return from_row(cls, row, forced=bool(row["forced"]))

    @property
    def from_name(self) -> str | None:
        """What was in service before; None for a rejection, which changes nothing in
        service."""
        return None if self.action == "reject" else name_of(self.stage, self.from_version)

    @property
    def to_name(self) -> str:
        return name_of(self.stage, self.to_version)

    def to_dict(self) -> dict:
        keys = ("id", "stage", "action", "from_version", "to_version", "from", "to")
        names = {"from": self.from_name, "to": self.to_name}
        return as_json(self, *keys, "forced", "decision_id", "note", "at", **names)


def name_of(stage: str, version: int | None) -> str:
    return "base" if version is None else f"{stage}-v{version}"


def _named(cursor) -> list[dict]:
    """The cursor's rows as {column: value}."""
    columns = [d[0] for d in cursor.description]
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


# --- adapters ------------------------------------------------------------------------


def adapters(db, stage: str | None = None) -> list[AdapterVersion]:
    """Every version (of `stage`), by stage and version."""
    return [entry.adapter for entry in registered(db, stage)]


def registered(db, stage: str | None = None) -> list[RegisteredAdapter]:
    """Every version (of `stage`) with whether it is servable, by stage and version."""
    where, args = ("WHERE stage = ?", [stage]) if stage else ("", [])
    cursor = db.execute(
        f"SELECT {VERSION_COLUMNS}, servable, unservable_reason FROM adapters {where} "
        "ORDER BY stage, version",
        args,
    )
    return [RegisteredAdapter.from_row(row) for row in _named(cursor)]


def active_versions(db) -> list[AdapterVersion]:
    """The version in service of each stage that has one, by stage."""
    cursor = db.execute(
        f"SELECT {VERSION_COLUMNS} FROM adapters WHERE status = 'active' ORDER BY stage"
    )
    return [AdapterVersion.from_row(row) for row in _named(cursor)]


def next_version(conn, stage: str) -> int:
    """The number the stage's next version gets (take it inside the write transaction that
    registers it)."""
    (highest,) = conn.execute(
        "SELECT MAX(version) FROM adapters WHERE stage = ?", [stage]
    ).fetchone()
    return (highest or 0) + 1


def register_candidate(
    conn,
    *,
    stage: str,
    version: int,
    kind: str,
    dataset: str,
    base: str,
    base_sha256: str,
    hyperparameters: str,
    metrics: dict,
    path: str,
    sha256: str,
) -> None:
    """A newly trained version, as a candidate (`hyperparameters`: its JSON text)."""
    conn.execute(
        "INSERT INTO adapters (stage, version, kind, dataset, base, base_sha256, "
        "hyperparameters, metrics, path, sha256, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [stage, version, kind, dataset, base, base_sha256, hyperparameters,
         json.dumps(metrics), path, sha256, now_iso()],
    )  # fmt: skip


def set_status(conn, stage: str, version: int, status: str) -> None:
    conn.execute(
        "UPDATE adapters SET status = ? WHERE stage = ? AND version = ?", [status, stage, version]
    )


def restore_servable(conn, stage: str, base_sha256: str, reason_prefix: str) -> None:
    """Servable again: the stage's versions on `base_sha256` that were marked not servable
    with a reason starting `reason_prefix`."""
    conn.execute(
        "UPDATE adapters SET servable = 1, unservable_reason = NULL "
        "WHERE stage = ? AND servable = 0 AND base_sha256 = ? "
        "AND unservable_reason LIKE ?",
        [stage, base_sha256, reason_prefix + "%"],
    )


def servable_on_other_bases(conn, stage: str, base_sha256: str) -> set[int]:
    """The stage's servable versions trained on a base other than `base_sha256`."""
    return {
        version
        for (version,) in conn.execute(
            "SELECT version FROM adapters WHERE stage = ? AND servable = 1 AND base_sha256 != ?",
            [stage, base_sha256],
        ).fetchall()
    }


def mark_unservable(conn, stage: str, version: int, status: str, reason: str) -> None:
    conn.execute(
        "UPDATE adapters SET status = ?, servable = 0, unservable_reason = ? "
        "WHERE stage = ? AND version = ?",
        [status, reason, stage, version],
    )


# --- adapter_events --------------------------------------------------------------------


def log_event(
    conn,
    stage: str,
    action: str,
    from_version: int | None,
    to_version: int | None,
    *,
    forced: bool = False,
    decision_id: int | None = None,
    note: str = "",
) -> None:
    conn.execute(
        "INSERT INTO adapter_events (stage, action, from_version, to_version, forced, "
        "decision_id, note, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [stage, action, from_version, to_version, int(forced), decision_id, note,
         now_iso()],
    )  # fmt: skip


def events(db, stage: str) -> list[AdapterEvent]:
    """The stage's events, oldest first."""
    cursor = db.execute(
        "SELECT id, stage, action, from_version, to_version, forced, decision_id, note, at "
        "FROM adapter_events WHERE stage = ? ORDER BY id",
        [stage],
    )
    return [AdapterEvent.from_row(row) for row in _named(cursor)]
