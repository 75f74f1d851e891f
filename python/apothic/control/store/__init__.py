"""All SurrealDB access. No SurrealQL outside this package."""

from apothic.control.store.db import Database
from apothic.control.store.records import Store

__all__ = ["Database", "Store"]
