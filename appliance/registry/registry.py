"""Which adapter version serves each stage: promote, reject, rollback, and their events.

A version is `candidate` (not decided), `active` (in service; at most one per stage, the
database refuses a second), `inactive` (was active, replaced or rolled back) or
`rejected` (the gate said no). Each change is one transaction with its row in
`adapter_events`; no adapter file is touched, so a rollback takes effect at the next
request.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from appliance.errors import ForgeError, UsageError
from appliance.registry.store import (
    AdapterEvent,
    AdapterVersion,
    RegisteredAdapter,
    adapters,
    events,
    log_event,
    registered,
    set_status,
)
from appliance.stages import STAGES
from appliance.store import transaction

STATUSES = ("candidate", "active", "inactive", "rejected")
ACTIONS = ("promote", "rollback", "reject", "invalidate")
# The tables are registry/store.py's; every change of status here goes through it.


class RegistryRefused(ForgeError):
    """A promote, reject or rollback that cannot be done as asked; nothing was changed."""


def check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise UsageError(f"unknown stage {stage!r}", f"stages: {', '.join(STAGES)}")


@contextmanager
def write_transaction(db) -> Iterator:
    """BEGIN IMMEDIATE … COMMIT; inside a transaction the caller opened, the caller's
    commit decides (so a gate decision and its promotion can be one transaction)."""
    if db.conn.in_transaction:
        yield db.conn
        return
    with transaction(db) as conn:
        yield conn


def versions(db, stage: str | None = None) -> list[RegisteredAdapter]:
    if stage is not None:
        check_stage(stage)
    return registered(db, stage)


def _entry(db, stage: str, version: int) -> RegisteredAdapter:
    # `db` is a sqlite-utils database or, inside a transaction, its raw connection.
    for entry in versions(db, stage):
        if entry.adapter.version == version:
            return entry
    known = [f"v{a.version}" for a in adapters(db, stage)]
    raise UsageError(
        f"{stage} has no version v{version}",
        f"versions of {stage}: {', '.join(known)}" if known else f"{stage} has no adapters yet",
    )


def get(db, stage: str, version: int) -> AdapterVersion:
    return _entry(db, stage, version).adapter


def active(db, stage: str) -> AdapterVersion | None:
    check_stage(stage)
    found = [a for a in adapters(db, stage) if a.status == "active"]
    return found[0] if found else None


def newest_candidate(db, stage: str) -> AdapterVersion | None:
    """The stage's newest version still waiting for the gate; None when none waits."""
    waiting = [a for a in adapters(db, stage) if a.status == "candidate"]
    return waiting[-1] if waiting else None


def _refuse_unservable(entry: RegisteredAdapter, verb: str) -> None:
    if not entry.servable:
        raise RegistryRefused(
            f"cannot {verb} {entry.name}: it is not servable ({entry.unservable_reason})",
            f"train {entry.adapter.stage} again on the current base (forge train "
            f"{entry.adapter.stage}); the old file stays on disk",
        )


def promote(
    db,
    stage: str,
    version: int,
    *,
    decision_id: int | None = None,
    forced: bool = False,
    note: str = "",
) -> AdapterVersion:
    """Put `version` in service for `stage`; the one active until now becomes inactive.

    A rejected version is promoted only with `forced` or a new gate decision."""
    with write_transaction(db) as conn:
        entry = _entry(conn, stage, version)
        if entry.adapter.status == "active":
            raise RegistryRefused(
                f"{entry.name} is already active", "forge adapters lists the other versions"
            )
        _refuse_unservable(entry, "promote")
        if entry.adapter.status == "rejected" and not forced and decision_id is None:
            raise RegistryRefused(
                f"{entry.name} was rejected by the gate",
                f"promote it with --force, or put it in service with "
                f"forge rollback {stage} --to v{version}",
            )
        current = active(conn, stage)
        if current is not None:
            set_status(conn, stage, current.version, "inactive")
        set_status(conn, stage, version, "active")
        before = current.version if current else None
        log_event(
            conn, stage, "promote", before, version, forced=forced, decision_id=decision_id,
            note=note,
        )  # fmt: skip
    return get(db, stage, version)


def reject(
    db, stage: str, version: int, *, decision_id: int | None = None, note: str = ""
) -> AdapterVersion:
    """Mark a candidate rejected (the gate said no); it stays on disk and in the list."""
    with write_transaction(db) as conn:
        entry = _entry(conn, stage, version)
        if entry.adapter.status != "candidate":
            raise RegistryRefused(
                f"{entry.name} is {entry.adapter.status}, not a candidate: only candidates are "
                "rejected",
                f"to take an active version out of service: forge rollback {stage}",
            )
        set_status(conn, stage, version, "rejected")
        log_event(conn, stage, "reject", None, version, decision_id=decision_id, note=note)
    return get(db, stage, version)


def _in_service_before(conn, stage: str) -> list[int]:
    """The versions promoted and not rolled back since, oldest first: the last is the
    active one, the one below it what a plain rollback returns to (a stack of services)."""
    stack: list[int] = []
    for event in events(conn, stage):
        action, from_version, to_version = event.action, event.from_version, event.to_version
        if action == "promote":
            stack.append(to_version)
        elif action == "rollback" and to_version is None:
            stack.clear()
        elif action == "rollback" and to_version in stack:
            del stack[len(stack) - stack[::-1].index(to_version) :]
        elif action in ("rollback", "invalidate"):
            if stack and stack[-1] == from_version:
                stack.pop()
            if to_version is not None:
                stack.append(to_version)
    return stack


def _choose_target(conn, stage: str, to: int | None, to_base: bool):
    """(the active version, the entry a rollback puts in service or None for the base,
    the notes saying why): the rule of rollback(), deciding nothing."""
    check_stage(stage)
    current = active(conn, stage)
    if current is None and to is None:
        raise RegistryRefused(
            f"nothing is active for {stage}: it already uses the base",
            f"forge adapters {stage} lists its versions; forge rollback {stage} --to vN "
            "puts one in service",
        )
    notes = []
    if to is not None:
        target = _entry(conn, stage, to)
        if current is not None and to == current.version:
            raise RegistryRefused(f"{target.name} is already active")
        _refuse_unservable(target, "roll back to")
        notes.append(f"to {target.name}, chosen by the operator")
        if target.adapter.status == "rejected":
            notes.append("a version the gate rejected")
    elif to_base:
        target = None
        notes.append("to the base, asked for")
    else:
        target = None
        for version in reversed(_in_service_before(conn, stage)):
            if version == current.version:
                continue
            candidate = _entry(conn, stage, version)
            if candidate.servable:
                target = candidate
                break
            notes.append(f"skipped {candidate.name} (not servable)")
        back = target.name if target else "the base"
        notes.insert(0, f"back to {back}, in service before {current.name}")
    return current, target, notes


def rollback_target(db, stage: str) -> tuple[AdapterVersion | None, AdapterVersion | None]:
    """(from, to) a plain `forge rollback STAGE` would do now, changing nothing (the
    dashboard's confirmation shows it). Raises the refusal rollback() would."""
    current, target, _ = _choose_target(db, stage, None, False)
    return current, get(db, stage, target.adapter.version) if target else None


def rollback(
    db, stage: str, to: int | None = None, *, to_base: bool = False
) -> tuple[AdapterVersion | None, AdapterVersion | None]:
    """Take the active version out of service: back to the one in service before it
    (skipping versions no longer servable), to version `to`, or to the base (`to_base`,
    or when nothing servable came before). Returns (from, to); None is the base."""
    if to is not None and to_base:
        raise UsageError("give either a version or the base as the target, not both")
    with write_transaction(db) as conn:
        current, target, notes = _choose_target(conn, stage, to, to_base)
        if current is not None:
            set_status(conn, stage, current.version, "inactive")
        if target is not None:
            set_status(conn, stage, target.adapter.version, "active")
        log_event(
            conn, stage, "rollback", current.version if current else None,
            target.adapter.version if target else None,
            forced=bool(target and target.adapter.status == "rejected"), note="; ".join(notes),
        )  # fmt: skip
    return (
        get(db, stage, current.version) if current else None,
        get(db, stage, target.adapter.version) if target else None,
    )


def history(db, stage: str) -> list[AdapterEvent]:
    """The stage's promotions, rejections, rollbacks and invalidations, oldest first."""
    check_stage(stage)
    return events(db, stage)
