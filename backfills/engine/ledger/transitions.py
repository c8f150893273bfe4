"""Which state a run may go to from which, each edge with the reason it exists (maintenance_tasks'
``VALID_STATUS_TRANSITIONS``); the ledger checks every state change against it."""

from __future__ import annotations

from ...exceptions import BackfillError
from ...models import BackfillRun

State = BackfillRun.State

#: Every allowed change of ``BackfillRun.state``, and why each edge exists.
TRANSITIONS: dict[str, frozenset[str]] = {
    State.PENDING: frozenset(
        {
            State.RUNNING,  # claimed by its first owner
            State.PAUSED,  # `pause` before any process claimed it
            State.CANCELLED,  # `cancel`, or superseded by `run --restart`
        }
    ),
    State.RUNNING: frozenset(
        {
            State.RUNNING,  # taken over from an owner that is gone
            State.PAUSED,  # signal, `pause`, partial run, critical health; or `pause` of a
            # run whose owner is gone
            State.FAILED,  # a chunk raised a non-transient error, or post_check failed
            State.CANCELLED,  # `cancel`, or superseded by `run --restart`
            State.COMPLETED,  # the last window committed and post_check passed
        }
    ),
    State.PAUSED: frozenset(
        {
            State.RUNNING,  # resumed
            State.CANCELLED,  # `cancel`, or superseded by `run --restart`
        }
    ),
    State.FAILED: frozenset(
        {
            State.RUNNING,  # resumed after the cause was fixed
            State.PAUSED,  # `pause`: keep it from being resumed by accident
            State.CANCELLED,  # given up, or superseded by `run --restart`
        }
    ),
    State.COMPLETED: frozenset(),  # final: a new run needs `run --restart`
    State.CANCELLED: frozenset(),  # final
}


class InvalidTransition(BackfillError):
    """A run cannot go from its state to the one asked for."""


def sources(target: str) -> frozenset[str]:
    """The states from which a run may change to *target*."""
    return frozenset(state for state, nexts in TRANSITIONS.items() if target in nexts)


def check_transition(run: BackfillRun, target: str) -> None:
    """Raise ``InvalidTransition`` unless *run* may change from its state to *target*."""
    if target not in TRANSITIONS.get(run.state, frozenset()):
        raise InvalidTransition(
            f"Run #{run.pk} of {run.label} is {run.state}; it cannot be {target}."
        )
