"""What the commands open before they work: the configuration and the database."""

from __future__ import annotations

from typing import TYPE_CHECKING

from appliance.config import Config, load_config
from appliance.sandbox import check_sandbox
from appliance.store import open_db

if TYPE_CHECKING:
    import sqlite_utils


def open_forge(*, sandbox: bool = False) -> tuple[Config, sqlite_utils.Database]:
    """The configuration and FORGE_HOME's database (its folders made, migrated). With
    `sandbox`, then SandboxError unless the sandbox can confine a run: nothing is graded,
    rather than every commit failing the same way."""
    config = load_config()
    db = open_db(config)
    if sandbox:
        check_sandbox(config)
    return config, db
