"""The adapter registry: which version of each stage is active, promote and rollback,
what the model pool serves for a stage now, and the package train/eval split."""

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
from appliance.registry.split import SplitRefused, hashed_split, set_split

__all__ = [
    "RegisteredAdapter",
    "RegistryRefused",
    "SplitRefused",
    "active",
    "active_adapter",
    "as_adapter",
    "get",
    "hashed_split",
    "history",
    "invalidate_replaced",
    "promote",
    "reject",
    "resolver",
    "rollback",
    "rollback_target",
    "set_split",
    "versions",
]
