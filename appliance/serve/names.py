"""The model names `forge serve` answers to.

One name per role (`reasoning`, `coder`): that role's base alone. One per stage
(`task_analysis`, `scope`, `precision`, `plan`, `code`): the stage's base with the stage's
active adapter, read from the registry on every request, so a promote or rollback is served
from the next request on, without a restart.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.config import Config
from appliance.errors import ForgeError
from appliance.models.manifest import ROLES, ModelsManifest
from appliance.registry.serving import active_adapter
from appliance.serving.pool import Adapter
from appliance.stages import STAGE_ROLES, STAGES


class UnknownModel(ForgeError):
    """A request names a model `forge serve` does not serve."""


@dataclass(frozen=True)
class ServedModel:
    name: str
    role: str  # the base model role that runs it
    stage: str | None  # None: the base alone


@dataclass(frozen=True)
class Resolved:
    """What a name serves now: its base and the adapter (None: the base alone)."""

    model: ServedModel
    base: str
    adapter: Adapter | None


def served_models(manifest: ModelsManifest) -> tuple[ServedModel, ...]:
    roles = [ServedModel(role, role, None) for role in ROLES if role in manifest.roles]
    return (*roles, *(ServedModel(stage, STAGE_ROLES[stage], stage) for stage in STAGES))


def find(manifest: ModelsManifest, name: str) -> ServedModel:
    for model in served_models(manifest):
        if model.name == name:
            return model
    names = ", ".join(m.name for m in served_models(manifest))
    raise UnknownModel(f"the model {name!r} does not exist", f"models: {names}")


def resolve(config: Config, db, manifest: ModelsManifest, model: ServedModel) -> Resolved:
    """The base and the adapter `model` serves at this moment."""
    adapter = active_adapter(config, db, model.stage) if model.stage else None
    return Resolved(model, manifest.for_role(model.role).name, adapter)
