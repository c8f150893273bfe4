"""Read the next chunk while the current one is written (``Backfill.prefetch``).

A row backfill spends its chunk reading rows, computing in Python and writing; serially, the
database waits for Python and Python for the database. With prefetching, a worker thread with
its own connection finds chunk N+1's window, loads its rows, transforms them and builds the
write while the runner writes chunk N and commits it with its checkpoint. The commits do not
change: the runner still writes each chunk and its checkpoint in one transaction, in order, on
its own connection; the worker only reads (in a transaction of its own, under the same lock and
statement timeouts as a chunk). A prefetched chunk that does not start at the runner's cursor
(after a retry shrank the window), that is larger than the current chunk size, or that has
waited more than PREFETCH_MAX_AGE seconds for the runner since it was ready (the runner slept
or was throttled meanwhile) is thrown away, and any error in the worker only means the runner
does that chunk itself, where errors are handled as always. What does change is when the rows
are read: before the previous chunk's write rather than just before their own (the wait after
they are ready is bounded by PREFETCH_MAX_AGE; the time ``transform`` takes is there either
way).
"""

from __future__ import annotations

import copy
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from django.db import connections, transaction

from .base import Backfill, PreparedChunk
from .chunking import Window, next_window
from .db import vendor_for

if TYPE_CHECKING:
    from .conf import Settings

logger = logging.getLogger("backfills")

# (the window or None at the end of the walk, what prepare_window returned, when it was ready)
Prefetched = tuple[Window | None, PreparedChunk | None, float]


def prefetch_unavailable(backfill: Backfill, using: str) -> str | None:
    """Why *backfill* cannot prefetch on *using* now, or None when it can."""
    if not type(backfill).prefetch:
        return "not asked for"
    if not type(backfill).can_prefetch(backfill.reverse):
        return "its kind reads and writes in one hook"
    connection = connections[using]
    if not vendor_for(connection).supports_prefetch:
        return f"not on {connection.vendor}"
    if connection.in_atomic_block:
        # A second connection cannot see the enclosing transaction's uncommitted rows.
        return "inside an enclosing transaction"
    return None


class Prefetcher:
    """One worker thread reading ahead by one chunk on its own connection to *using*."""

    def __init__(
        self,
        backfill: Backfill,
        using: str,
        *,
        max_age: float,
        prepare_connection: Callable[[Any], None] = lambda connection: None,
    ) -> None:
        self.backfill = backfill
        self.using = using
        self.max_age = max_age
        #: Called on the worker's connection inside each read's transaction (chunk timeouts).
        self.prepare_connection = prepare_connection
        self.key = type(backfill).get_key()
        self._jobs: queue.SimpleQueue[tuple[Any, Any, int, Future[Prefetched]] | None] = (
            queue.SimpleQueue()
        )
        self._pending: tuple[Any, int, Future[Prefetched]] | None = None
        #: Chunks the runner took from the worker.
        self.used = 0
        self._thread = threading.Thread(target=self._work, name="backfills-prefetch", daemon=True)
        self._thread.start()

    def submit(self, cursor: Any, horizon: Any, size: int) -> None:
        """Start preparing the window of at most *size* rows after *cursor*."""
        if self._pending is not None and self._pending[:2] == (cursor, size):
            return  # already on its way (the runner retried the chunk before it)
        future: Future[Prefetched] = Future()
        if self._pending is not None:
            self._pending[2].cancel()  # not started yet: skip it; running: ignored
        self._pending = (cursor, size, future)
        self._jobs.put((cursor, horizon, size, future))

    def take(self, cursor: Any, max_size: int) -> tuple[Window, PreparedChunk | None] | None:
        """The prepared window after *cursor* with its rows, waiting for the worker if it is
        still at it; None when there is none to use (the caller does the chunk itself)."""
        pending, self._pending = self._pending, None
        if pending is None or pending[0] != cursor:
            return None
        try:
            window, prepared, ready_at = pending[2].result()
        except Exception as exc:  # the runner redoes the chunk and handles the error there
            logger.warning(
                "reading ahead the chunk after %r failed (%s: %s); the runner reads it itself",
                cursor,
                type(exc).__name__,
                exc,
            )
            return None
        if window is None or window.size > max_size:
            return None
        if time.monotonic() - ready_at > self.max_age:
            logger.debug("the chunk read ahead after %r waited too long; reading it again", cursor)
            return None
        self.used += 1
        return window, prepared

    def close(self, timeout: float = 2.0) -> None:
        """Stop the worker after its current job; it closes its connection as it ends (a
        daemon thread: a job still running after *timeout* does not keep the process up)."""
        if self._pending is not None:
            self._pending[2].cancel()
            self._pending = None
        self._jobs.put(None)
        self._thread.join(timeout)

    def _work(self) -> None:
        try:
            while (job := self._jobs.get()) is not None:
                cursor, horizon, size, future = job
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    future.set_result(self._prepare(cursor, horizon, size))
                except BaseException as exc:
                    future.set_exception(exc)
                    # Start the next job on a fresh connection, in case this one broke.
                    connections[self.using].close()
        finally:
            connections[self.using].close()

    def _prepare(self, cursor: Any, horizon: Any, size: int) -> Prefetched:
        with transaction.atomic(using=self.using):
            self.prepare_connection(connections[self.using])
            window = next_window(self.key, self.using, cursor, horizon, size)
            if window is None:
                return None, None, time.monotonic()
            # A shallow copy, so that `window` is this chunk's while the runner's backfill
            # holds the chunk being written; everything else (params, caches) is shared.
            backfill = copy.copy(self.backfill)
            backfill.window = window
            queryset = window.ordered(backfill.chunk_queryset())
            prepared = backfill.prepare_window(queryset)
        return window, prepared, time.monotonic()


@contextmanager
def reading_ahead(
    backfill: Backfill, settings: Settings, *, label: str
) -> Iterator[Prefetcher | None]:
    """A read-ahead worker for the duration of a run's loop, when the backfill asks for one
    and can have it (None otherwise; the reason is logged)."""
    from .engine.preconditions import apply_chunk_timeouts

    why_not = prefetch_unavailable(backfill, backfill.using)
    if why_not is not None:
        if type(backfill).prefetch:
            logger.info("backfill %s does not prefetch: %s", label, why_not)
        yield None
        return
    prefetcher = Prefetcher(
        backfill,
        backfill.using,
        max_age=settings.prefetch_max_age,
        prepare_connection=lambda connection: apply_chunk_timeouts(connection, settings),
    )
    logger.info("backfill %s reads each next chunk ahead on a second connection", label)
    try:
        yield prefetcher
    finally:
        prefetcher.close()
