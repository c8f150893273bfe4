"""The pages behind ``BackfillRunAdmin``: the overview, a run's page and its live figures, the
actions (each a POST behind its own permission) and the start page."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db import router
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from .. import control
from ..display import format as fmt
from ..dryrun import dry_run
from ..exceptions import BackfillError
from ..models import BackfillAction, BackfillRun, BackfillSample, QuarantinedRow
from ..registry import registry
from ..snapshot import RunSnapshot
from .charts import Chart, chunk_chart, throughput_chart
from .forms import SettingsForm, StartForm

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin

    from ..base import Backfill

    _Base = ModelAdmin[BackfillRun]
else:
    _Base = object

State = BackfillRun.State

#: Seconds between the pages' refreshes of their figures.
REFRESH_SECONDS = 2
#: Rows per chunk of the start page's dry run (3 chunks, rolled back, inside the request).
PREVIEW_BATCH_SIZE = 100


def who(request: HttpRequest) -> str:
    """The acting user's name, as recorded in the run's actions."""
    return str(request.user.get_username())


def figures(run: RunSnapshot) -> dict[str, Any]:
    """What the pages show of a run, as text (and the percent as a number), for templates and
    for the live refresh's JSON alike."""
    percent = run.percent
    return {
        "id": run.pk,
        "label": run.label,
        "state": run.shown_state,
        "percent": None if percent is None else round(percent, 1),
        "percent_text": fmt.percent(run),
        "rows": f"{run.rows_scanned:,} of {fmt.total(run)} rows",
        "processed": f"{run.rows_processed:,}",
        "failed": f"{run.rows_failed:,}",
        "chunks": f"{run.chunks_done:,}",
        "rate": fmt.rate(run.rate),
        # Only a run that is walking has an ETA (a paused or failed one would say "0.0s").
        "eta": fmt.duration(run.eta_seconds if run.shown_state == State.RUNNING else None),
        "elapsed": fmt.elapsed(run),
        "throttled": run.throttle_reason,
        "workers": "-" if run.workers is None else str(run.workers),
        "updated": fmt.age(run.updated_at),
        "sizing": fmt.sizing(run),
        "sleep": f"{run.sleep:g}s",
        "profile": fmt.pacing(run),
        "status_reason": run.status_reason,
        "requested": run.requested_state,
    }


def overview(request: HttpRequest, using: str) -> list[dict[str, Any]]:
    """Each registered backfill with its latest run's figures, filtered by the request's
    ``state`` and searched by its ``q``."""
    wanted_state = request.GET.get("state", "")
    query = request.GET.get("q", "").strip().lower()
    rows = []
    for backfill_cls in sorted(registry, key=lambda cls: cls.name or ""):
        name = backfill_cls.name or ""
        if query and query not in name.lower():
            continue
        state = control.backfill_state(backfill_cls, using=using)
        if wanted_state and state.state.removesuffix(" (reverse)") != wanted_state:
            continue
        row: dict[str, Any] = {
            "name": name,
            "doc": (backfill_cls.__doc__ or "").strip().splitlines()[0:1],
            "state": state.state,
            "run": None,
        }
        if state.run is not None:
            row["run"] = figures(state.run)
        rows.append(row)
    return rows


#: The states the overview filters by.
OVERVIEW_STATES = [
    "never run",
    "running",
    "interrupted",
    "paused",
    "failed",
    "completed",
    "cancelled",
    "reversed",
]


class RunViews(_Base):
    """The views of ``BackfillRunAdmin`` (a mixin, so the model admin stays declarations)."""

    change_form_template = "admin/backfills/backfillrun/run.html"

    # -- urls -----------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        def view(function: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
            return self.admin_site.admin_view(function)

        own = [
            path("live/", view(self.overview_live), name="backfills_overview_live"),
            path("start/<str:name>/", view(self.start_view), name="backfills_start"),
            path("<int:pk>/live/", view(self.run_live), name="backfills_run_live"),
            path("<int:pk>/pause/", view(self.pause_view), name="backfills_run_pause"),
            path("<int:pk>/resume/", view(self.resume_view), name="backfills_run_resume"),
            path("<int:pk>/cancel/", view(self.cancel_view), name="backfills_run_cancel"),
            path("<int:pk>/settings/", view(self.settings_view), name="backfills_run_settings"),
            path("<int:pk>/retry/", view(self.retry_view), name="backfills_run_retry"),
        ]
        return own + super().get_urls()

    # -- helpers --------------------------------------------------------------------------

    def using(self) -> str:
        return router.db_for_read(BackfillRun)

    def shown(self, run: BackfillRun) -> RunSnapshot:
        return control.snapshot(run, control._ledger(self.using()))

    def charts(self, run: BackfillRun) -> dict[str, Chart]:
        """The run's history drawn: ``throughput`` and ``chunks`` (durations)."""
        samples = list(
            BackfillSample.objects.using(self.using()).filter(run=run).order_by("at", "id")
        )
        return {"throughput": throughput_chart(samples), "chunks": chunk_chart(samples)}

    def run_or_404(self, request: HttpRequest, pk: int) -> BackfillRun:
        if not self.has_view_permission(request):
            raise PermissionDenied
        run = BackfillRun.objects.using(self.using()).filter(pk=pk).first()
        if run is None:
            raise Http404(f"No backfill run #{pk}.")
        return run

    def may(self, request: HttpRequest, permission: str) -> bool:
        return bool(request.user.has_perm(f"backfills.{permission}"))

    def require(self, request: HttpRequest, permission: str) -> None:
        if not self.may(request, permission):
            raise PermissionDenied

    def back(self, run: BackfillRun) -> HttpResponseRedirect:
        return HttpResponseRedirect(
            reverse(f"{self.admin_site.name}:backfills_backfillrun_change", args=[run.pk])
        )

    def report(self, request: HttpRequest, call: Callable[[], Any]) -> Any:
        """Run a control call; its sentence (or its error's) becomes the page's message."""
        try:
            result = call()
        except BackfillError as exc:
            messages.error(request, str(exc))
            return None
        message = getattr(result, "message", None)
        if message:
            messages.success(request, message)
        return result

    # -- pages ----------------------------------------------------------------------------

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """The run's page: figures, charts, partitions, quarantined rows, actions, controls."""
        try:
            pk = int(object_id)
        except ValueError:
            raise Http404(f"No backfill run {object_id!r}.") from None
        if request.method != "GET":
            raise PermissionDenied  # every action has its own POST url
        run = self.run_or_404(request, pk)
        shown = self.shown(run)
        using = self.using()
        charts = self.charts(run)
        state = shown.shown_state
        unfinished = run.state not in BackfillRun.FINAL
        can_control = self.may(request, "control_backfillrun")
        pending_pause = run.requested_state == State.PAUSED
        context = {
            **self.admin_site.each_context(request),
            "title": f"{run.label} — run #{run.pk}",
            "subtitle": None,
            "opts": self.model._meta,
            "run": run,
            "shown": shown,
            "figures": figures(shown),
            "refresh_seconds": REFRESH_SECONDS,
            "throughput": charts["throughput"],
            "chunk_durations": charts["chunks"],
            "partitions": control.partitions(run.pk, using=using) if run.parallel else [],
            "quarantined": QuarantinedRow.objects.using(using).filter(
                run=run, resolved_at__isnull=True
            )[:50],
            "quarantined_count": QuarantinedRow.objects.using(using)
            .filter(name=run.name, resolved_at__isnull=True)
            .count(),
            "actions": BackfillAction.objects.using(using).filter(run=run)[:50],
            "can_pause": can_control and state == State.RUNNING and not pending_pause,
            "can_resume": can_control
            and (
                (run.parallel and state in {State.PAUSED, State.FAILED, "interrupted"})
                or (state == State.RUNNING and pending_pause)
            ),
            "serial_resume": (
                not run.parallel and unfinished and state in {State.PAUSED, State.FAILED}
            ),
            "can_cancel": can_control and unfinished,
            "can_tune": self.may(request, "tune_backfillrun") and unfinished,
            "can_retry": self.may(request, "retry_quarantinedrow"),
            "can_start": self.may(request, "start_backfillrun") and run.name in registry,
            "settings_form": SettingsForm(initial=SettingsForm.current(run)),
            "live_url": reverse(f"{self.admin_site.name}:backfills_run_live", args=[run.pk]),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.change_form_template, context)

    def run_live(self, request: HttpRequest, pk: int) -> JsonResponse:
        """The run's figures and charts, for the page's refresh every few seconds."""
        run = self.run_or_404(request, pk)
        charts = {name: chart.svg for name, chart in self.charts(run).items()}
        return JsonResponse({"run": figures(self.shown(run)), "charts": charts})

    def overview_live(self, request: HttpRequest) -> JsonResponse:
        """Every backfill's state and latest run figures, for the overview's refresh."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        return JsonResponse({"backfills": overview(request, self.using())})

    # -- actions (POST, each behind its permission) ---------------------------------------

    def _act(self, request: HttpRequest, pk: int, permission: str) -> BackfillRun:
        if request.method != "POST":
            raise PermissionDenied
        run = self.run_or_404(request, pk)
        self.require(request, permission)
        return run

    def pause_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        run = self._act(request, pk, "control_backfillrun")
        self.report(
            request,
            lambda: control.pause(
                run.name, using=self.using(), reverse=run.reverse, by=who(request), via="admin"
            ),
        )
        return self.back(run)

    def resume_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        run = self._act(request, pk, "control_backfillrun")
        using = self.using()
        if not run.parallel:
            try:
                withdrawn = control.withdraw_pause(
                    run.name, using=using, reverse=run.reverse, by=who(request), via="admin"
                )
            except BackfillError as exc:
                messages.error(request, str(exc))
                return self.back(run)
            if withdrawn is not None:
                messages.success(request, withdrawn.message)
            else:
                messages.warning(
                    request,
                    f"Run #{run.pk} is a serial run: it continues in a process, "
                    f"`python manage.py backfill resume {run.name}`.",
                )
            return self.back(run)
        result = self.report(
            request,
            lambda: control.resume_parallel(run.name, using=using, by=who(request), via="admin"),
        )
        if result is not None and result.action == "resumed":
            self._enqueue(request, run, run.workers or 1)
        return self.back(run)

    def cancel_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """GET: the confirmation page; POST: cancel the run for good."""
        if request.method != "POST":
            run = self.run_or_404(request, pk)
            self.require(request, "control_backfillrun")
            context = {
                **self.admin_site.each_context(request),
                "title": f"Cancel run #{run.pk} of {run.label}?",
                "opts": self.model._meta,
                "run": run,
                "figures": figures(self.shown(run)),
            }
            return TemplateResponse(request, "admin/backfills/backfillrun/cancel.html", context)
        run = self._act(request, pk, "control_backfillrun")
        self.report(
            request,
            lambda: control.cancel(
                run.name, using=self.using(), reverse=run.reverse, by=who(request), via="admin"
            ),
        )
        return self.back(run)

    def settings_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        run = self._act(request, pk, "tune_backfillrun")
        form = SettingsForm(request.POST)
        if not form.is_valid():
            errors = "; ".join(
                f"{k}: {' '.join(str(e) for e in v)}" for k, v in form.errors.items()
            )
            messages.error(request, f"Settings not changed: {errors}")
            return self.back(run)
        changes = form.changes(SettingsForm.current(run))
        if not changes:
            messages.warning(
                request,
                "Nothing to change: give a batch size, a time, a sleep, a profile or a duty.",
            )
            return self.back(run)
        self.report(
            request,
            lambda: control.change_settings(
                run.name,
                using=self.using(),
                reverse=run.reverse,
                by=who(request),
                via="admin",
                **changes,
            ),
        )
        return self.back(run)

    def retry_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        run = self._act(request, pk, "retry_quarantinedrow")
        outcome = self.report(
            request,
            lambda: control.retry_quarantined(
                run.name, using=self.using(), by=who(request), via="admin"
            ),
        )
        if outcome is not None:
            resolved, failing = outcome
            level = messages.WARNING if failing else messages.SUCCESS
            messages.add_message(
                request,
                level,
                f"{fmt.count(len(resolved), 'quarantined row')} processed, "
                f"{len(failing):,} still failing.",
            )
        return self.back(run)

    # -- start ----------------------------------------------------------------------------

    def start_view(self, request: HttpRequest, name: str) -> HttpResponse:
        """A form from the backfill's typed parameters; *preview* shows a dry run (rolled
        back), *start* hands a new parallel run to the task backend. Without a task backend
        the page gives the command to run instead."""
        from ..tasks import backend_problem

        if not self.has_view_permission(request):
            raise PermissionDenied
        self.require(request, "start_backfillrun")
        try:
            backfill_cls = registry.get(name)
        except BackfillError as exc:
            raise Http404(str(exc)) from None
        using = self.using()
        unfinished = control.active_run(backfill_cls, using=using)
        problem = backend_problem()
        form = StartForm(backfill_cls, request.POST if request.method == "POST" else None)
        preview = None
        preview_error = ""
        if request.method == "POST" and form.is_valid():
            if "preview" in request.POST:
                try:
                    # Small chunks: the preview holds one transaction inside the request.
                    preview = dry_run(
                        backfill_cls,
                        using=using,
                        parameters=form.parameters(),
                        batch_size=PREVIEW_BATCH_SIZE,
                    )
                except BackfillError as exc:
                    preview_error = str(exc)
            elif "start" in request.POST and unfinished is None and problem is None:
                result = self.report(
                    request,
                    lambda: control.start(
                        backfill_cls,
                        workers=form.cleaned_data["workers"],
                        parameters=form.parameters(),
                        using=using,
                        restart=bool(form.cleaned_data.get("restart")),
                        profile=form.cleaned_data.get("profile") or None,
                        by=who(request),
                        via="admin",
                    ),
                )
                if result is not None:
                    return HttpResponseRedirect(
                        reverse(
                            f"{self.admin_site.name}:backfills_backfillrun_change",
                            args=[result.run.pk],
                        )
                    )
        context = {
            **self.admin_site.each_context(request),
            "title": f"Start {backfill_cls.name}",
            "opts": self.model._meta,
            "backfill": backfill_cls,
            "doc": (backfill_cls.__doc__ or "").strip(),
            "form": form,
            "unfinished": unfinished,
            "problem": problem,
            "command": form.command(backfill_cls.name or name),
            "preview": preview,
            "preview_error": preview_error,
            "projected": None if preview is None else fmt.duration(preview.projected_seconds),
        }
        return TemplateResponse(request, "admin/backfills/backfillrun/start.html", context)

    def _enqueue(self, request: HttpRequest, run: BackfillRun, workers: int) -> None:
        """Hand a resumed parallel run to the task backend, or say which command drains it."""
        from ..tasks import backend_problem, enqueue_workers

        problem = backend_problem()
        if problem is not None:
            messages.warning(
                request,
                f"{problem} Drain the run with `python manage.py backfill worker` processes.",
            )
            return
        backend = enqueue_workers(run, workers, using=self.using())
        messages.info(request, f"Enqueued {fmt.count(workers, 'worker task')} on {backend}.")


def start_url(site_name: str, backfill_cls: type[Backfill]) -> str:
    return reverse(f"{site_name}:backfills_start", args=[backfill_cls.name])


__all__ = ["OVERVIEW_STATES", "REFRESH_SECONDS", "RunViews", "figures", "overview", "start_url"]
