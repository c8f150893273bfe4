"""Which database errors are worth retrying: the chunk did nothing wrong, the moment was bad."""

from __future__ import annotations

from django.db import utils

# PostgreSQL SQLSTATEs: serialization failure, deadlock, lock_timeout, statement_timeout
# (query_canceled), admin shutdown (pg_terminate_backend), crash/cannot-connect-now, and
# the whole connection-exception class 08.
PG_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03"})
# MySQL/MariaDB error numbers: lock wait timeout, deadlock, server gone away, lost connection,
# can't connect, max_statement_time (MariaDB) / max_execution_time (MySQL) exceeded,
# client disconnected by the server, server shutdown in progress, and a statement interrupted
# by KILL QUERY (the blocking guard's cancel, or an operator's).
MYSQL_TRANSIENT_CODES = frozenset(
    {1205, 1213, 2006, 2013, 2002, 2003, 1969, 3024, 4031, 1053, 1317}
)


def is_transient(exc: BaseException) -> bool:
    """True for deadlocks, lock/statement timeouts, serialization failures, lost connections."""
    if not isinstance(exc, utils.Error | ConnectionError):
        return False
    if isinstance(exc, ConnectionError):
        return True
    cause = exc.__cause__ or exc
    sqlstate = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    if sqlstate:
        return sqlstate in PG_TRANSIENT_SQLSTATES or sqlstate.startswith("08")
    if type(cause).__module__.startswith("psycopg") and isinstance(exc, utils.OperationalError):
        # No SQLSTATE: the failure is the connection itself (server closed it, reset, ...).
        return True
    args = getattr(cause, "args", ())
    if args and isinstance(args[0], int):
        return args[0] in MYSQL_TRANSIENT_CODES
    message = str(cause).lower()
    # SQLite: another writer holds the lock beyond the busy timeout.
    if "database is locked" in message or "database table is locked" in message:
        return True
    # A connection Django already knows to be closed (e.g. closed after a previous failure).
    return isinstance(exc, utils.InterfaceError) and "closed" in message


def is_timeout(exc: BaseException) -> bool:
    """True for lock-wait and statement timeouts: a smaller chunk may get through."""
    if not isinstance(exc, utils.Error):
        return False
    cause = exc.__cause__ or exc
    sqlstate = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    if sqlstate:
        return sqlstate in {"55P03", "57014"}
    args = getattr(cause, "args", ())
    if args and isinstance(args[0], int):
        return args[0] in {1205, 1969, 3024, 1317}
    return "database is locked" in str(cause).lower()
