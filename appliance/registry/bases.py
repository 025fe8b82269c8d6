"""Adapters fit the base they were trained on: when a role gets a new base, the adapters
of its stages trained on another base are marked not servable, and an active one is
taken out of service (the stage falls back to the base). Files are never deleted."""

from __future__ import annotations

from appliance.config import Config
from appliance.models.manifest import read_manifest
from appliance.registry.registry import log_event, write_transaction
from appliance.stages import STAGE_ROLES
from appliance.training.job import AdapterVersion, adapters

BASE_REPLACED = "base replaced: "  # how the reason starts, so a base serving again restores


def invalidate_replaced(config: Config, db) -> list[AdapterVersion]:
    """Mark not servable every adapter whose base no longer serves its stage's role (and
    servable again those whose base serves again). Returns the ones marked now."""
    manifest = read_manifest(config.models_manifest)
    marked = []
    with write_transaction(db) as conn:
        for stage, role in STAGE_ROLES.items():
            base = manifest.for_role(role)
            conn.execute(
                "UPDATE adapters SET servable = 1, unservable_reason = NULL "
                "WHERE stage = ? AND servable = 0 AND base_sha256 = ? "
                "AND unservable_reason LIKE ?",
                [stage, base.sha256, BASE_REPLACED + "%"],
            )
            stale = {
                r[0]
                for r in conn.execute(
                    "SELECT version FROM adapters WHERE stage = ? AND servable = 1 "
                    "AND base_sha256 != ?",
                    [stage, base.sha256],
                ).fetchall()
            }
            for adapter in adapters(conn, stage):
                if adapter.version not in stale:
                    continue
                reason = (
                    f"{BASE_REPLACED}trained on {adapter.base} ({adapter.base_sha256[:12]}), "
                    f"the {role} role is now served by {base.name} ({base.sha256[:12]})"
                )
                status = "inactive" if adapter.status == "active" else adapter.status
                conn.execute(
                    "UPDATE adapters SET status = ?, servable = 0, unservable_reason = ? "
                    "WHERE stage = ? AND version = ?",
                    [status, reason, stage, adapter.version],
                )
                if adapter.status == "active":
                    log_event(conn, stage, "invalidate", adapter.version, None, note=reason)
                marked.append(adapter)
    return marked
