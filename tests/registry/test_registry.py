"""Promote, reject and rollback on a real SQLite file: one active version per stage, each
change one transaction with its event."""

from __future__ import annotations

import threading

import pytest

from appliance import registry
from appliance.errors import UsageError
from appliance.registry import RegistryRefused
from appliance.store import connect, sqlite_module
from tests.registry.conftest import add_adapter


def statuses(db, stage: str) -> dict[int, str]:
    return dict(
        db.execute("SELECT version, status FROM adapters WHERE stage = ?", [stage]).fetchall()
    )


def test_promote_makes_one_active_and_the_previous_inactive(db):
    for version in (1, 2):
        add_adapter(db, "scope", version)
    assert registry.active(db, "scope") is None
    got = registry.promote(db, "scope", 1, decision_id=7, note="gate passed")
    assert got.name == "scope-v1" and got.status == "active"
    assert registry.active(db, "scope").version == 1
    registry.promote(db, "scope", 2)
    assert statuses(db, "scope") == {1: "inactive", 2: "active"}
    events = registry.history(db, "scope")
    assert [(e.action, e.from_name, e.to_name) for e in events] == [
        ("promote", "base", "scope-v1"),
        ("promote", "scope-v1", "scope-v2"),
    ]
    assert events[0].decision_id == 7 and events[0].note == "gate passed"
    assert not events[0].forced


def test_the_database_refuses_a_second_active_version(db):
    for version in (1, 2):
        add_adapter(db, "scope", version)
    add_adapter(db, "plan", 1, status="active")  # another stage may have its own
    registry.promote(db, "scope", 1)
    with pytest.raises(sqlite_module().IntegrityError):
        db.execute("UPDATE adapters SET status = 'active' WHERE stage = 'scope' AND version = 2")
    with pytest.raises(sqlite_module().IntegrityError, match="status must be"):
        db.execute("UPDATE adapters SET status = 'promoted' WHERE stage = 'scope'")
    with pytest.raises(sqlite_module().IntegrityError, match="not servable cannot be active"):
        db.execute("UPDATE adapters SET servable = 0 WHERE stage = 'scope' AND version = 1")
    assert statuses(db, "scope") == {1: "active", 2: "candidate"}


def test_promote_refuses_unknown_active_unservable_and_rejected_versions(db):
    for version in (1, 2, 3):
        add_adapter(db, "code", version)
    registry.promote(db, "code", 1)
    with pytest.raises(UsageError, match="code has no version v9") as info:
        registry.promote(db, "code", 9)
    assert "v1, v2, v3" in info.value.hint
    with pytest.raises(UsageError, match="unknown stage"):
        registry.promote(db, "poetry", 1)
    with pytest.raises(RegistryRefused, match="already active"):
        registry.promote(db, "code", 1)
    db.execute(
        "UPDATE adapters SET servable = 0, unservable_reason = 'trained on another base' "
        "WHERE stage = 'code' AND version = 2"
    )
    with pytest.raises(RegistryRefused, match="not servable .trained on another base") as info:
        registry.promote(db, "code", 2)
    assert "forge train code" in info.value.hint
    registry.reject(db, "code", 3, decision_id=4)
    with pytest.raises(RegistryRefused, match="rejected by the gate"):
        registry.promote(db, "code", 3)
    assert statuses(db, "code") == {1: "active", 2: "candidate", 3: "rejected"}
    registry.promote(db, "code", 3, forced=True, note="operator override")
    assert statuses(db, "code") == {1: "inactive", 2: "candidate", 3: "active"}
    assert registry.history(db, "code")[-1].forced


def test_reject_takes_candidates_only(db):
    add_adapter(db, "plan", 1)
    add_adapter(db, "plan", 2)
    assert registry.reject(db, "plan", 1, decision_id=3, note="worse").status == "rejected"
    assert registry.history(db, "plan")[-1].to_dict() | {"at": None} == {
        "id": 1, "stage": "plan", "action": "reject", "from_version": None, "to_version": 1,
        "from": None, "to": "plan-v1", "forced": False, "decision_id": 3, "note": "worse",
        "at": None,
    }  # fmt: skip
    with pytest.raises(RegistryRefused, match="not a candidate"):
        registry.reject(db, "plan", 1)
    registry.promote(db, "plan", 2)
    with pytest.raises(RegistryRefused, match="forge rollback plan"):
        registry.reject(db, "plan", 2)


def test_rollback_goes_back_one_service_at_a_time_then_to_the_base(db):
    for version in (1, 2, 3):
        add_adapter(db, "scope", version)
    for version in (1, 2, 3):
        registry.promote(db, "scope", version)
    before, after = registry.rollback(db, "scope")
    assert (before.name, after.name) == ("scope-v3", "scope-v2")
    assert before.status == "inactive" and after.status == "active"
    before, after = registry.rollback(db, "scope")  # again: further back, not to v3
    assert (before.name, after.name) == ("scope-v2", "scope-v1")
    before, after = registry.rollback(db, "scope")
    assert (before.name, after) == ("scope-v1", None)
    assert registry.active(db, "scope") is None
    with pytest.raises(RegistryRefused, match="nothing is active for scope") as info:
        registry.rollback(db, "scope")
    assert "--to vN" in info.value.hint
    assert [e.to_name for e in registry.history(db, "scope")][-3:] == [
        "scope-v2", "scope-v1", "base"
    ]  # fmt: skip


def test_rollback_with_nothing_earlier_goes_to_the_base(db):
    add_adapter(db, "precision", 1)
    registry.promote(db, "precision", 1)
    assert registry.rollback(db, "precision") == (registry.get(db, "precision", 1), None)
    assert statuses(db, "precision") == {1: "inactive"}


def test_rollback_to_a_version_or_the_base(db):
    for version in (1, 2, 3):
        add_adapter(db, "code", version)
    registry.promote(db, "code", 1)
    registry.promote(db, "code", 2)
    registry.reject(db, "code", 3)
    before, after = registry.rollback(db, "code", 3)  # the operator may pick a rejected one
    assert (before.name, after.name) == ("code-v2", "code-v3")
    event = registry.history(db, "code")[-1]
    assert event.forced and "rejected" in event.note
    # v2 was rolled back from: a plain rollback now goes to what was in service before it.
    assert registry.rollback(db, "code")[1].name == "code-v1"
    assert registry.rollback(db, "code", to_base=True)[1] is None
    assert registry.active(db, "code") is None
    # With nothing active, --to vN puts that version in service.
    assert registry.rollback(db, "code", 1) == (None, registry.get(db, "code", 1))
    with pytest.raises(RegistryRefused, match="already active"):
        registry.rollback(db, "code", 1)
    with pytest.raises(UsageError, match="not both"):
        registry.rollback(db, "code", 2, to_base=True)


def test_rollback_skips_versions_no_longer_servable(db):
    for version in (1, 2, 3):
        add_adapter(db, "plan", version)
    for version in (1, 2, 3):
        registry.promote(db, "plan", version)
    db.execute(
        "UPDATE adapters SET servable = 0, unservable_reason = 'x' WHERE stage = 'plan' "
        "AND version = 2"
    )
    assert registry.rollback(db, "plan")[1].name == "plan-v1"
    assert "skipped plan-v2 (not servable)" in registry.history(db, "plan")[-1].note
    with pytest.raises(RegistryRefused, match="not servable"):
        registry.rollback(db, "plan", 2)


def test_promote_and_rollback_are_atomic_for_concurrent_readers(db, forge_home):
    for stage in ("scope", "code"):
        for version in (1, 2):
            add_adapter(db, stage, version)
            registry.promote(db, stage, version)
    seen: list[tuple] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        reader = connect(forge_home.db_path, migrate=False)
        try:
            while not stop.is_set():
                seen.append(
                    reader.execute(
                        "SELECT (SELECT COUNT(*) FROM adapters WHERE stage = 'scope' AND "
                        "status = 'active'), (SELECT COUNT(*) FROM adapters WHERE "
                        "stage = 'code' AND status = 'active')"
                    ).fetchone()
                )
                assert registry.active(reader, "scope") is not None
        except BaseException as exc:  # reported to the main thread below
            errors.append(exc)
        finally:
            reader.close()

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for _ in range(60):
            for stage in ("scope", "code"):
                assert registry.rollback(db, stage)[1].version == 1
                registry.promote(db, stage, 2)
            registry.rollback(db, "scope", 1)
            registry.promote(db, "scope", 2)
    finally:
        stop.set()
        thread.join()
    assert not errors, errors
    assert len(seen) > 100 and set(seen) == {(1, 1)}
    assert len(registry.history(db, "scope")) == 2 + 60 * 4


def test_rollback_target_says_what_rollback_would_do_and_changes_nothing(db):
    for version in (1, 2):
        add_adapter(db, "scope", version)
    registry.promote(db, "scope", 1)
    registry.promote(db, "scope", 2)
    before, after = registry.rollback_target(db, "scope")
    assert (before.name, after.name) == ("scope-v2", "scope-v1")
    assert registry.active(db, "scope").version == 2  # unchanged
    assert [e.action for e in registry.history(db, "scope")] == ["promote", "promote"]
    assert registry.rollback(db, "scope")[1].name == after.name  # and rollback agrees
    with pytest.raises(registry.RegistryRefused, match="nothing is active"):
        registry.rollback_target(db, "plan")
