"""The SQLite state store: one function opens it, named migrations shape it."""

from appliance.store.db import connect, open_db, sqlite_module, transaction

__all__ = ["connect", "open_db", "sqlite_module", "transaction"]
