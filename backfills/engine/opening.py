"""Which run an invocation works on: the unfinished one (with its own parameters), a new one,
or none because the latest completed and nothing has undone it since."""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from ..exceptions import RunNotResumable
from ..models import BackfillRun
from ..parameters import from_json, parse_parameters, to_json
from .ledger import Ledger, active_key
from .options import RunOptions, new_run_settings
from .owners import owner_pid_alive_here
from .preconditions import pre_check

if TYPE_CHECKING:
    from ..base import Backfill
    from ..conf import Settings

State = BackfillRun.State


class Opening:
    """Finds or creates the run for one invocation of a backfill."""

    def __init__(
        self, backfill: Backfill, ledger: Ledger, options: RunOptions, settings: Settings
    ) -> None:
        self.backfill = backfill
        self.backfill_cls = type(backfill)
        self.name = self.backfill_cls.name
        self.using = ledger.using
        self.ledger = ledger
        self.options = options
        self.settings = settings

    def open_run(self) -> tuple[BackfillRun | None, bool]:
        """The run to claim and whether it resumes one, creating it if need be; (None, False)
        when the latest run of this direction completed and nothing has undone it since."""
        reverse = self.options.reverse
        latest = self.ledger.latest(self.name, reverse)
        live = (
            latest
            if latest is not None and latest.active_key == active_key(self.name, reverse)
            else None
        )
        if live is not None and not self.options.restart:
            self.use_parameters(live)
            problem = self.backfill.get_walk().check_resume(live.horizon)
            if problem:
                raise RunNotResumable(f"Run #{live.pk} of {live.label} cannot resume: {problem}.")
            return live, live.cursor is not None or live.chunks_done > 0
        if live is not None:
            # Never restart under a live owner: it would go on committing chunks of the run
            # we cancel while the new run does them again.
            if self.ledger.owner_alive(live) and (
                not self.options.force or owner_pid_alive_here(live)
            ):
                raise self.ledger.owned(live, forced=self.options.force)
            self.ledger.supersede(live, "superseded by --restart")
        elif latest is not None and not self.options.restart:
            if latest.state == State.COMPLETED and not self.undone_since(latest):
                return None, False
            if latest.state != State.COMPLETED:
                direction = " (reverse)" if reverse else ""
                raise RunNotResumable(
                    f"The latest run of {self.name}{direction} (#{latest.pk}) was "
                    f"{latest.state}; pass --restart to start a new run from the beginning."
                )
        values = parse_parameters(self.name, self.backfill_cls.parameters, self.options.parameters)
        self.backfill.params = SimpleNamespace(**values)
        pre_check(self.backfill)
        walk = self.backfill.get_walk()
        horizon = walk.horizon()
        total, exact = walk.total(horizon, self.options.exact_count, self.settings.estimate_above)
        run, created = self.ledger.create(
            BackfillRun(
                name=self.name,
                reverse=reverse,
                active_key=active_key(self.name, reverse),
                state=State.PENDING,
                parameters=to_json(values),
                horizon=None if horizon is None else walk.dump(horizon),
                rows_total=total,
                rows_total_exact=exact,
                started_by=self.options.started_by[:255],
                **vars(new_run_settings(self.backfill_cls, self.options, self.settings)),
            )
        )
        if not created:  # another process created the live run between our read and insert
            self.use_parameters(run)
        else:
            self.ledger.record_action(
                run, "start", by=self.options.started_by, via=self.options.via, message=""
            )
        return run, not created and (run.cursor is not None or run.chunks_done > 0)

    def undone_since(self, completed: BackfillRun) -> bool:
        """Whether a run of the other direction that changed data started after *completed*
        (a completed forward run followed by a reverse means the data is reversed)."""
        other = self.ledger.latest(self.name, not self.options.reverse)
        return other is not None and other.pk > completed.pk and other.chunks_done > 0

    def use_parameters(self, run: BackfillRun) -> None:
        """Continue with the run's own parameters; refuse different ones."""
        declared = self.backfill_cls.parameters
        stored = from_json(declared, run.parameters)
        if self.options.parameters:
            given = parse_parameters(run.name, declared, self.options.parameters)
            if to_json(given) != to_json(stored):
                raise RunNotResumable(
                    f"Run #{run.pk} of {run.label} was started with parameters "
                    f"{_describe(run.parameters)}, not {_describe(to_json(given))}. Resume it "
                    "without --param (or with the same values), or pass --restart."
                )
        self.backfill.params = SimpleNamespace(**stored)


def _describe(parameters: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(parameters.items())) or "none"
