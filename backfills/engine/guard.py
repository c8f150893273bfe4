"""The blocking guard: while a chunk is open, watch from a second connection for application
sessions waiting on the locks the chunk holds, and for how long.

A row a chunk writes stays locked until the chunk commits, so the worst wait a backfill
imposes follows its longest chunk. The guard measures those waits themselves (PostgreSQL:
``pg_locks`` and ``pg_blocking_pids()``; MariaDB/MySQL: InnoDB's lock waits) every
``BLOCKING_POLL_SECONDS`` (0.2 s), four times as often once a session waits:

- a wait over ``BLOCKING_BUDGET`` makes the next chunk half as large and the walk yield for a
  moment before it (sizing grows back additively from the half afterwards);
- a wait over ``BLOCKING_LIMIT`` cancels the open chunk's statement at once: its transaction
  rolls back, its locks go, and the chunk is retried smaller.

Databases without lock-wait views (SQLite: one writer, no row locks) get no guard.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db import DatabaseError, connections

from ..db import vendor_for
from ..display import format as fmt

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

    from ..conf import Settings

logger = logging.getLogger("backfills")


@dataclass(frozen=True)
class Blocking:
    """What the guard saw while one chunk was open: the most sessions waiting on its locks at
    once, the longest wait, whether it cancelled the chunk, and whether that is over budget."""

    sessions: int = 0
    max_wait: float = 0.0
    cancelled: bool = False
    over_budget: bool = False

    @property
    def pause(self) -> float:
        """How long to yield before the next chunk: as long as the longest wait, at most 1 s."""
        return min(self.max_wait, 1.0) if self.over_budget else 0.0

    def describe(self) -> str:
        """``3 sessions waited up to 180 ms on our locks`` (``; the chunk was cancelled``)."""
        text = waited(self.sessions, self.max_wait)
        return text + ("; the chunk was cancelled and is retried smaller" if self.cancelled else "")


def waited(sessions: int, max_wait: float) -> str:
    """``3 sessions waited up to 180 ms on our locks``: the guard's log and the displays."""
    return f"{fmt.count(sessions, 'session')} waited up to {max_wait * 1000:.0f} ms on our locks"


NOTHING = Blocking()


class BlockingGuard:
    """Watches one connection's chunks from a probe connection in a thread of its own."""

    def __init__(self, using: str, budget: float, limit: float | None, poll: float) -> None:
        self.using = using
        self.vendor = vendor_for(connections[using])
        self.budget = budget
        self.limit = limit
        # Never faster than the database refreshes what it shows (InnoDB: 0.1 s).
        self.poll = max(poll, self.vendor.lock_waits_min_interval)
        self.fast_poll = max(poll / 4, self.vendor.lock_waits_min_interval)
        #: What the last chunk saw (set when its watch ends).
        self.last = NOTHING
        self._cond = threading.Condition()
        self._backend: int | None = None
        self._generation = 0
        self._sessions = 0
        self._max_wait = 0.0
        self._cancelled = False
        #: When this chunk's guard first saw each waiting session (time.monotonic()): a wait
        #: is at least that old, whatever the database's own clock says.
        self._first_seen: dict[int, float] = {}
        self._closed = False
        self._thread: threading.Thread | None = None
        #: When the probe last looked (time.monotonic()).
        self._looked_at = float("-inf")

    @classmethod
    def for_settings(
        cls, using: str, settings: Settings, *, one_of_many: bool = False
    ) -> BlockingGuard | None:
        """A guard for *using*, or None when the database cannot see lock waits, the budget
        is off (``BLOCKING_BUDGET = None``), or the guard would be *one_of_many* (a parallel
        run's worker) on a database where several lookers starve each other (InnoDB)."""
        if settings.blocking_budget is None:
            return None
        vendor = vendor_for(connections[using])
        if not vendor.sees_lock_waits or (one_of_many and vendor.lock_waits_one_looker):
            return None
        return cls(
            using, settings.blocking_budget, settings.blocking_limit, settings.blocking_poll_seconds
        )

    @contextmanager
    def watch(
        self,
        connection: BaseDatabaseWrapper,
        budget: float | None = None,
        limit: float | None = None,
    ) -> Iterator[None]:
        """Watch *connection*'s session for as long as the block runs (the chunk's
        transaction); ``last`` says what was seen. *budget* and *limit*, when given, are this
        chunk's (its run's profile, which `backfill set` may change between chunks)."""
        if budget is not None:
            with self._cond:
                self.budget, self.limit = budget, limit
        connection.ensure_connection()
        backend = self.vendor.backend_id(connection)
        if backend is None:
            yield
            return
        with self._cond:
            self._start()
            self._generation += 1
            self._backend = backend
            self._sessions, self._max_wait, self._cancelled = 0, 0.0, False
            self._first_seen = {}
            self._cond.notify_all()
        try:
            yield
        finally:
            # Under the lock: a cancel in flight completes before the chunk is left, so it
            # can never reach the next chunk's statements.
            with self._cond:
                self._backend = None
                self.last = Blocking(
                    self._sessions,
                    self._max_wait,
                    self._cancelled,
                    self._max_wait > self.budget,
                )

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- the probe thread ----------------------------------------------------------------------

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._probe, name=f"backfills-guard-{self.using}", daemon=True
            )
            self._thread.start()

    def _probe(self) -> None:
        probe = connections[self.using]  # this thread's own connection
        try:
            while True:
                with self._cond:
                    while self._backend is None and not self._closed:
                        self._cond.wait()
                    if self._closed:
                        return
                    backend, generation = self._backend, self._generation
                assert backend is not None
                # Never sooner than the database refreshes what it shows, across chunks too:
                # InnoDB answers a look within 0.1 s of the previous one from its old copy,
                # which still holds the previous chunk's waits (then timed as if they went on
                # in this one).
                early = self._looked_at + self.vendor.lock_waits_min_interval - time.monotonic()
                if early > 0:
                    time.sleep(early)
                self._look(probe, backend, generation)
                with self._cond:
                    if not self._closed and self._backend is not None:
                        # Every look costs the run a little (a query, and the GIL): look
                        # every `poll` while nobody waits, four times as often once someone
                        # does, to time the wait against the budget and the limit.
                        watching = bool(self._first_seen) and self._generation == generation
                        self._cond.wait(self.fast_poll if watching else self.poll)
        finally:
            probe.close()

    def _look(self, probe: BaseDatabaseWrapper, backend: int, generation: int) -> None:
        self._looked_at = time.monotonic()
        try:
            waits = self.vendor.lock_waits(probe, backend)
        except DatabaseError as exc:  # the guard is an observer: never fail the run for it
            logger.debug("blocking guard on %r: %s", self.using, exc)
            probe.close()
            return
        now = time.monotonic()
        with self._cond:
            if self._generation != generation or self._backend is None:
                return  # that chunk ended meanwhile
            # A session that no longer waits is forgotten: if it waits again, that is a new
            # wait, timed from when it is seen.
            self._first_seen = {w: self._first_seen.get(w, now) for w in waits}
            if not waits:
                return
            longest = 0.0
            for waiter, reported in waits.items():
                first = self._first_seen[waiter]
                longest = max(longest, reported, now - first)
            self._sessions = max(self._sessions, len(waits))
            self._max_wait = max(self._max_wait, longest)
            if self.limit is None or longest < self.limit:
                return
            # Past the limit: cancel the chunk; if the waits outlast that (the statement had
            # just finished, or the cancel did not take), end its session.
            force = self._cancelled
            self._cancelled = True
            try:
                self.vendor.release_locks(probe, backend, force=force)
            except DatabaseError as exc:
                logger.warning("blocking guard could not release the chunk's locks: %s", exc)
                probe.close()
