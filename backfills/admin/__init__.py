"""The Django admin for backfills: every backfill at a glance, a page per run with live
figures and charts, and the controls (pause, resume, cancel, settings, retry, start), each
behind its own permission and recorded with the user who acted.

Everything goes through the Python control API (``backfills.control``), as the command line
does. Nothing here walks rows inside a web request: a start or a resume of a parallel run is
handed to the task backend (``TASK_BACKEND``) or to ``backfill worker`` processes.

Permissions (``Meta.permissions`` of the models): ``backfills.view_backfillrun`` to look,
``backfills.control_backfillrun`` to pause, resume and cancel, ``backfills.tune_backfillrun``
to change settings, ``backfills.start_backfillrun`` to start, and
``backfills.retry_quarantinedrow`` to retry quarantined rows.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString

from ..display import format as fmt
from ..models import BackfillAction, BackfillRun, QuarantinedRow
from .views import RunViews


@admin.register(BackfillRun)
class BackfillRunAdmin(RunViews, admin.ModelAdmin[BackfillRun]):
    """Runs: the changelist of every run, and a page per run (its ``change`` page) that shows
    and steers it instead of an edit form."""

    list_display = [
        "id",
        "label_column",
        "state_column",
        "progress_column",
        "rate_column",
        "workers",
        "updated_at",
    ]
    list_display_links = ["id", "label_column"]
    list_filter = ["state", "reverse", "name"]
    search_fields = ["name"]
    ordering = ["-id"]
    list_per_page = 50

    @admin.display(description="backfill", ordering="name")
    def label_column(self, run: BackfillRun) -> str:
        return run.label

    @admin.display(description="state", ordering="state")
    def state_column(self, run: BackfillRun) -> str:
        return self.shown(run).shown_state

    @admin.display(description="progress")
    def progress_column(self, run: BackfillRun) -> SafeString:
        percent = run.percent
        return format_html(
            '<progress max="100" value="{}"></progress> {}',
            f"{percent:.1f}" if percent is not None else "",
            fmt.percent(run),
        )

    @admin.display(description="rate")
    def rate_column(self, run: BackfillRun) -> str:
        return fmt.rate(run.rate)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # runs are started from the start page (or the command line)

    def has_delete_permission(self, request: HttpRequest, obj: BackfillRun | None = None) -> bool:
        # Only finished history may go: an unfinished run (a failed one too: it resumes from
        # its checkpoint) is someone's progress.
        if obj is not None and obj.state not in BackfillRun.FINAL:
            return False
        return super().has_delete_permission(request, obj)


@admin.register(QuarantinedRow)
class QuarantinedRowAdmin(admin.ModelAdmin[QuarantinedRow]):
    """Rows a quarantining backfill set aside; retried from their run's page."""

    list_display = ["id", "name", "row_pk", "error_class", "attempts", "updated_at", "resolved_at"]
    list_filter = ["name", ("resolved_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "row_pk", "error_message"]
    readonly_fields = [f.name for f in QuarantinedRow._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(BackfillAction)
class BackfillActionAdmin(admin.ModelAdmin[BackfillAction]):
    """Who did what to which backfill, from the admin, the command line or code."""

    list_display = ["at", "name", "action", "by", "via", "run", "message"]
    list_filter = ["action", "via", "name"]
    search_fields = ["name", "by", "message"]
    readonly_fields = [f.name for f in BackfillAction._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # an audit log
