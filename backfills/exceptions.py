"""Errors raised by django-backfills. Each carries a message meant for the person running it."""

from __future__ import annotations


class BackfillError(Exception):
    """Base class for errors a user can act on (the command turns them into CommandError)."""


class AlreadyRegistered(BackfillError):
    """Two backfill classes claim the same name."""


class NotRegistered(BackfillError):
    """No backfill is registered under the requested name."""


class BackfillConfigurationError(BackfillError):
    """A backfill cannot run as declared (unknown model, unorderable primary key, ...)."""


class MigrationNotApplied(BackfillError):
    """A migration listed in ``Backfill.requires`` is not applied on the target database."""


class RunOwned(BackfillError):
    """Another live process owns the run."""


class RunNotResumable(BackfillError):
    """The latest run is final (completed or cancelled) and no restart was requested."""


class LeaseLost(BackfillError):
    """Our claim on the run was taken over by another process while a chunk was open."""


class BackfillFailed(BackfillError):
    """A chunk raised a non-transient error; the run is recorded as failed."""


class PreconditionFailed(BackfillError):
    """``Backfill.pre_check()`` refused to start a new run."""


class CheckFailed(BackfillError):
    """Raised by (or on behalf of) ``pre_check`` / ``post_check`` with what is wrong."""


class Abort(BaseException):  # noqa: N818 - mirrors KeyboardInterrupt, not an Exception on purpose
    """Raised from a signal handler to abandon the open chunk at once.

    It derives from BaseException so that ``except Exception`` in user code cannot swallow it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
