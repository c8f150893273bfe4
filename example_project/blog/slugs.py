"""Unique slugs for a batch of titles, checked against the table with exact lookups only."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.db.models import QuerySet
from django.utils.text import slugify

MAX_LENGTH = 255
# Room for "-NNNNN" so a suffixed slug still fits the column.
BASE_LENGTH = MAX_LENGTH - 8
# Bind parameters per lookup query; well under every backend's limit.
QUERY_PARAMS = 500


def base_slug(title: str) -> str:
    """``"Hello, World!"`` -> ``"hello-world"``; a title with no letters gives ``"post"``."""
    return slugify(title)[:BASE_LENGTH].strip("-") or "post"


def taken(queryset: QuerySet[Any], candidates: Iterable[str]) -> set[str]:
    """The candidates already used as a slug in *queryset*'s table."""
    found: set[str] = set()
    values = list(dict.fromkeys(candidates))
    for start in range(0, len(values), QUERY_PARAMS):
        batch = values[start : start + QUERY_PARAMS]
        found.update(queryset.filter(slug__in=batch).values_list("slug", flat=True))
    return found


def unique_slugs(queryset: QuerySet[Any], titles: Sequence[str]) -> list[str]:
    """A slug per title, unique among themselves and the table: ``x``, ``x-2``, ``x-3``...

    Duplicates probe growing ranges of suffixes with ``slug IN (...)`` on the unique index,
    so no query needs a LIKE scan, and a chunk costs a few queries however many duplicates.
    """
    bases = [base_slug(title) for title in titles]
    used = taken(queryset, bases)
    result: list[str | None] = [None] * len(bases)
    pending: list[int] = []
    for index, base in enumerate(bases):
        if base in used:
            pending.append(index)
        else:
            result[index] = base
            used.add(base)
    first, width = 2, 8
    while pending:
        suffixes = range(first, first + width)
        used |= taken(queryset, (f"{bases[i]}-{n}" for i in pending for n in suffixes))
        still: list[int] = []
        for index in pending:
            for n in suffixes:
                candidate = f"{bases[index]}-{n}"
                if candidate not in used:
                    result[index] = candidate
                    used.add(candidate)
                    break
            else:
                still.append(index)
        pending = still
        first, width = first + width, width * 4
    return [slug for slug in result if slug is not None]
