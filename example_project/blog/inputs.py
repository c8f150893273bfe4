"""The blog's input backfills: apply a CSV file someone hands you."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, ClassVar

from backfills import CSVBackfill, Parameter, register

from .models import Post


@register
class ApplyPostStatuses(CSVBackfill):
    """Set the status of the posts a CSV file lists (columns: id, status).

    Editors send a spreadsheet: "archive these, publish those". Each chunk of lines is applied
    in one transaction with its checkpoint (the line and byte offset), so a file of millions of
    lines resumes after the last committed line. A line whose status is not a valid one is
    quarantined with its line number (``backfill status`` lists them) and the rest go on.
    ``manage.py write_post_statuses_csv`` writes a sample file."""

    model = "blog.Post"
    requires = [("blog", "0001_initial")]
    columns: ClassVar[dict[str, Parameter]] = {
        "id": Parameter(int),
        "status": Parameter(str, choices=[status.value for status in Post.Status]),
    }
    quarantine = True

    def process_rows(self, rows: list[dict[str, Any]]) -> None:
        by_status: dict[str, list[int]] = defaultdict(list)
        for row in rows:
            by_status[row["status"]].append(row["id"])
        for status, ids in by_status.items():
            Post.objects.using(self.using).filter(pk__in=ids).update(status=status)
