"""``{% backfills_overview as overview %}``: the admin's overview of every backfill, for the
``backfills`` app index (``/admin/backfills/``)."""

from __future__ import annotations

from typing import Any

from django import template
from django.db import router
from django.urls import reverse

from ..models import BackfillRun

register = template.Library()


@register.simple_tag(takes_context=True)
def backfills_overview(context: template.Context) -> dict[str, Any]:
    """Each registered backfill with its latest run, filtered by the request's ``state`` and
    ``q``; ``allowed`` is False for users who may not view runs."""
    from ..admin.views import OVERVIEW_STATES, REFRESH_SECONDS, overview

    request = context["request"]
    user = request.user
    if not user.has_perm("backfills.view_backfillrun"):
        return {"allowed": False}
    return {
        "allowed": True,
        "rows": overview(request, router.db_for_read(BackfillRun)),
        "states": OVERVIEW_STATES,
        "state": request.GET.get("state", ""),
        "query": request.GET.get("q", ""),
        "can_start": user.has_perm("backfills.start_backfillrun"),
        "live_url": reverse("admin:backfills_overview_live") + "?" + request.GET.urlencode(),
        "refresh": REFRESH_SECONDS,
    }
