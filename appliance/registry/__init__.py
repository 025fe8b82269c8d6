"""The adapter registry: which version of each stage is active, promote and rollback,
what the model pool serves for a stage now (the package train/eval split is the
corpus's: appliance.packages.split)."""

from appliance.registry.bases import import_base, invalidate_replaced
from appliance.registry.registry import (
    RegistryRefused,
    active,
    get,
    history,
    newest_candidate,
    promote,
    reject,
    rollback,
    rollback_target,
    versions,
)
from appliance.registry.serving import active_adapter, as_adapter, resolver
from appliance.registry.store import (
    AdapterEvent,
    AdapterVersion,
    RegisteredAdapter,
    active_versions,
    adapters,
    next_version,
    register_candidate,
)

__all__ = [
    "AdapterEvent",
    "AdapterVersion",
    "RegisteredAdapter",
    "RegistryRefused",
    "active",
    "active_adapter",
    "active_versions",
    "adapters",
    "as_adapter",
    "get",
    "history",
    "import_base",
    "invalidate_replaced",
    "newest_candidate",
    "next_version",
    "promote",
    "register_candidate",
    "reject",
    "resolver",
    "rollback",
    "rollback_target",
    "versions",
]
