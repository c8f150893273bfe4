"""All vendor-specific SQL, one module per database vendor behind one small interface.

The engine, the writers and the health checks ask ``vendor_for(connection)`` for what differs
between databases (as Django's ``connection.ops`` does for the ORM) and never branch on
``connection.vendor`` themselves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Vendor

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

__all__ = ["Vendor", "vendor_for"]

_VENDORS: dict[str, Vendor] = {}


def vendor_for(connection: BaseDatabaseWrapper) -> Vendor:
    """The vendor adapter for *connection* (a plain ``Vendor`` for backends we do not know,
    which uses Django's portable paths and no vendor SQL)."""
    name = connection.vendor
    if name not in _VENDORS:
        cls: type[Vendor]
        if name == "postgresql":
            from .postgresql import PostgreSQL

            cls = PostgreSQL
        elif name == "mysql":
            from .mysql import MySQL

            cls = MySQL
        elif name == "sqlite":
            from .sqlite import SQLite

            cls = SQLite
        else:
            cls = Vendor
        _VENDORS[name] = cls()
    return _VENDORS[name]
