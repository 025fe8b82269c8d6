"""Adapters fit the base they were trained on: when a role gets a new base, the adapters
of its stages trained on another base are marked not servable, and an active one is
taken out of service (the stage falls back to the base). Files are never deleted."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from appliance.config import Config
from appliance.models import importing
from appliance.models.importing import ImportedBase
from appliance.models.manifest import read_manifest
from appliance.registry.registry import write_transaction
from appliance.registry.store import (
    AdapterVersion,
    adapters,
    log_event,
    mark_unservable,
    restore_servable,
    servable_on_other_bases,
)
from appliance.stages import STAGE_ROLES
from appliance.store import open_db

BASE_REPLACED = "base replaced: "  # how the reason starts, so a base serving again restores


def invalidate_replaced(config: Config, db) -> list[AdapterVersion]:
    """Mark not servable every adapter whose base no longer serves its stage's role (and
    servable again those whose base serves again). Returns the ones marked now."""
    manifest = read_manifest(config.models_manifest)
    marked = []
    with write_transaction(db) as conn:
        for stage, role in STAGE_ROLES.items():
            base = manifest.for_role(role)
            restore_servable(conn, stage, base.sha256, BASE_REPLACED)
            stale = servable_on_other_bases(conn, stage, base.sha256)
            for adapter in adapters(conn, stage):
                if adapter.version not in stale:
                    continue
                reason = (
                    f"{BASE_REPLACED}trained on {adapter.base} ({adapter.base_sha256[:12]}), "
                    f"the {role} role is now served by {base.name} ({base.sha256[:12]})"
                )
                status = "inactive" if adapter.status == "active" else adapter.status
                mark_unservable(conn, stage, adapter.version, status, reason)
                if adapter.status == "active":
                    log_event(conn, stage, "invalidate", adapter.version, None, note=reason)
                marked.append(adapter)
    return marked


def import_base(config: Config, gguf: Path, role: str, name: str | None = None) -> ImportedBase:
    """`forge models import`: the base imported (models.importing.import_base), then the
    adapters trained on the base it replaces made not servable (an active one leaves
    service), in FORGE_HOME's database."""
    imported = importing.import_base(config, gguf, role, name)
    # After models.toml changed: should this fail, the registry repeats the check when it
    # next resolves a stage's adapter, so serving never pairs an adapter with another base.
    db = open_db(config)
    try:
        invalidated = tuple(a.name for a in invalidate_replaced(config, db))
    finally:
        db.close()
    return dataclasses.replace(imported, invalidated=invalidated)
