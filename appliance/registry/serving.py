"""The adapter the model pool uses for a stage now, read from the database on every call,
so a promote or rollback is used by the very next request without a restart."""

from __future__ import annotations

from collections.abc import Callable

from appliance.config import Config
from appliance.models.manifest import read_manifest
from appliance.registry.bases import invalidate_replaced
from appliance.registry.registry import active
from appliance.registry.store import AdapterVersion
from appliance.serving.pool import Adapter
from appliance.stages import STAGE_ROLES


def active_adapter(config: Config, db, stage: str) -> Adapter | None:
    """The active version of `stage` as a pool Adapter; None: serve the base."""
    current = active(db, stage)
    if current is None:
        return None
    base = read_manifest(config.models_manifest).for_role(STAGE_ROLES[stage])
    if current.base_sha256 != base.sha256:
        # models.toml changed without `forge models import`: record it, serve the base.
        invalidate_replaced(config, db)
        return None
    return as_adapter(config, current)


def as_adapter(config: Config, version: AdapterVersion) -> Adapter:
    """A registered version as the pool's Adapter (its file under FORGE_HOME)."""
    return Adapter(version.name, config.home / version.path)


def resolver(config: Config, db) -> Callable[[str], Adapter | None]:
    """stage → the adapter to use now; what run_pipeline takes as `adapters`."""

    def adapter_for(stage: str) -> Adapter | None:
        return active_adapter(config, db, stage)

    return adapter_for
