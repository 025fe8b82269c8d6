"""The adapter registry: which version of each stage is active, promote and rollback,
what the model pool serves for a stage now (the package train/eval split is the
corpus's: appliance.packages.split)."""

from appliance.registry.bases import invalidate_replaced
from appliance.registry.registry import (
    RegisteredAdapter,
    RegistryRefused,
    active,
    get,
    history,
    promote,
    reject,
    rollback,
    rollback_target,
    versions,
)
from appliance.registry.serving import active_adapter, as_adapter, resolver

__all__ = [
    "RegisteredAdapter",
    "RegistryRefused",
    "active",
    "active_adapter",
    "as_adapter",
    "get",
    "history",
    "invalidate_replaced",
    "promote",
    "reject",
    "resolver",
    "rollback",
    "rollback_target",
    "versions",
]
