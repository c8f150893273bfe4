"""The composite-key walk (issue 16) beside the single-column one, for bench/run.py.

The example project's PostTranslation is keyed by ``CompositePrimaryKey("post", "language")``.
Its table is seeded with as many rows as Post's, and walked by the same two backfills run.py
walks Post with: a set-based UpdateBackfill (``slug = LOWER(REPLACE(title, ' ', '-'))``) and
a RowBackfill reading ``read_fields`` records (``slug = slugify(title)``). Both tables' slug
columns are indexed (Post's unique, a translation's not), so each write maintains one index
on the written column.

The seeding, chosen to keep the comparison fair:

- the first rows/2 posts get two translations each ("de", "fr"), so the key's leading
  column has duplicates and a window's bounds fall between two rows of one post, as in a
  real composite key (one translation per post would walk a key whose second column never
  decides anything);
- translation number k in key order is titled exactly as post number k is ("Post k Keyset
  Chunk k % 97"): the same titles, hence the same lengths and slugs, as the Post walk's rows;
- rows are inserted in key order, as Post's are in id order.

Kept apart from run.py, which imports it: this module does not import run.py (run.py runs as
``__main__``; importing it again would set everything up twice).
"""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.db.models import F, Value
from django.db.models.functions import Lower, Replace
from django.utils.text import slugify

from backfills import RowBackfill, UpdateBackfill
from backfills.registry import registry
from blog.models import Post, PostTranslation

#: The slug every strategy of the bench writes, as SQL (run.py uses this one too).
EXPECTED = Lower(Replace(F("title"), Value(" "), Value("-")))
LANGUAGES = ("de", "fr")


class TranslationSetBased(UpdateBackfill):
    """run.SetBased over the composite key."""

    model = "blog.PostTranslation"
    name = "bench.translation_set_based"
    updates = {"slug": EXPECTED}

    def get_queryset(self) -> Any:
        return PostTranslation.objects.filter(slug__isnull=True)


class TranslationRecords(RowBackfill):
    """run.RowSlugRecords over the composite key."""

    model = "blog.PostTranslation"
    name = "bench.translation_records"
    fields = ["slug"]
    read_fields = ["title"]

    def get_queryset(self) -> Any:
        return PostTranslation.objects.filter(slug__isnull=True)

    def transform(self, row: Any) -> None:
        row.slug = slugify(row.title)


for cls in (TranslationSetBased, TranslationRecords):
    if cls.name not in registry:
        registry.register(cls)


def table() -> str:
    return connection.ops.quote_name(PostTranslation._meta.db_table)


def clear() -> None:
    """Delete every translation (before Post's rows can be deleted)."""
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table()}")


def seed(rows: int) -> None:
    """Fill the translations' table with *rows* rows in one SQL statement (not timed); Post
    must hold at least rows/2 posts."""
    clear()
    post = connection.ops.quote_name(Post._meta.db_table)
    if connection.vendor == "mysql":
        title = "CONCAT('Post ', k, ' Keyset Chunk ', k %% 97)"
    else:
        title = "'Post ' || k || ' Keyset Chunk ' || (k %% 97)"
    languages = " UNION ALL ".join(
        f"SELECT '{code}' AS code, {number} AS n" for number, code in enumerate(LANGUAGES, 1)
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table()} (post_id, language, title) "
            f"SELECT post_id, code, {title} FROM ("
            f"SELECT p.id AS post_id, l.code AS code, p.base + l.n AS k FROM ("
            f"SELECT id, {len(LANGUAGES)} * (ROW_NUMBER() OVER (ORDER BY id) - 1) AS base "
            f"FROM {post}) p CROSS JOIN ({languages}) l"
            ") s WHERE k <= %s ORDER BY k",
            [rows],
        )
    settle(written=True)


def reset() -> None:
    """Clear the slugs a composite walk wrote (cheap when there are none: slug is indexed)."""
    written = PostTranslation.objects.filter(slug__isnull=False).update(slug=None)
    settle(written=bool(written))


def settle(written: bool) -> None:
    """What run.reset() does for Post, after the table changed: the walk starts from a
    vacuumed, analyzed table on PostgreSQL (a table unchanged since needs no new one)."""
    if written and connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM ANALYZE {table()}")


def verify(expected_rows: int) -> tuple[bool, str]:
    """*expected_rows* translations written (none skipped, none twice: the walk's limit is
    that many rows), each with the right slug."""
    filled = PostTranslation.objects.filter(slug__isnull=False)
    wrong = filled.exclude(slug=EXPECTED).count()
    count = filled.count()
    if wrong:
        return False, f"{wrong:,} wrong slugs"
    if count != expected_rows:
        return (
            False,
            f"{count:,} of {expected_rows:,} rows filled ({expected_rows - count:,} skipped)",
        )
    return True, "ok"
