"""The blog app's backfills: one for each everyday data migration, found by autodiscovery."""

from __future__ import annotations

import re
import string
import time
from typing import Any

from django.db.models import Case, Exists, F, OuterRef, Q, QuerySet, Value, When
from django.db.models.functions import Least, Now, Trim

from backfills import (
    Backfill,
    Parameter,
    RowBackfill,
    SQLBackfill,
    UpdateBackfill,
    register,
)

from .models import Category, Post, PostTranslation, Tag
from .slugs import base_slug, unique_slugs

VALID_STATUSES = [status.value for status in Post.Status]
CATEGORY_PREFIX = re.compile(r"^\s*\[([^\]]+)\]\s*(.*)$", re.DOTALL)


@register
class PopulatePostSlugs(RowBackfill):
    """Fill Post.slug from the title; duplicates get -2, -3, ... suffixes."""

    model = "blog.Post"
    requires = [("blog", "0002_post_slug")]
    fields = ["slug"]
    # Rows arrive as records of (id, title, slug), not Post instances: several times cheaper.
    read_fields = ["title"]

    def get_queryset(self) -> QuerySet[Post]:
        return Post.objects.filter(slug__isnull=True)

    def transform_chunk(self, rows: list[Any]) -> list[Any]:
        # Uniqueness depends on the whole chunk (and the table), so not row by row.
        table = Post._base_manager.using(self.using)
        for post, slug in zip(rows, unique_slugs(table, [p.title for p in rows]), strict=True):
            post.slug = slug
        return rows

    def post_check(self) -> str | None:
        missing = Post.objects.using(self.using).filter(slug__isnull=True).count()
        return f"{missing} posts still have no slug" if missing else None


@register
class BuildPostMetadata(RowBackfill):
    """Move seo_title and seo_description into the metadata JSON (reversible)."""

    model = "blog.Post"
    requires = [("blog", "0003_categories_tags_metadata")]
    fields = ["metadata"]
    reverse_fields = ["seo_title", "seo_description", "metadata"]

    def get_queryset(self) -> QuerySet[Post]:
        return Post.objects.filter(metadata__isnull=True)

    def get_reverse_queryset(self) -> QuerySet[Post]:
        return Post.objects.filter(metadata__isnull=False)

    def transform(self, post: Post) -> None:
        post.metadata = {"seo": {"title": post.seo_title, "description": post.seo_description}}

    def reverse_transform(self, post: Post) -> None:
        seo = (post.metadata or {}).get("seo", {})
        post.seo_title = seo.get("title", "")
        post.seo_description = seo.get("description", "")
        post.metadata = None


@register
class NormalisePostCategories(Backfill):
    """Turn "[News] Title" into category News and title "Title"."""

    model = "blog.Post"
    requires = [("blog", "0003_categories_tags_metadata")]

    def get_queryset(self) -> QuerySet[Post]:
        return Post.objects.filter(title__startswith="[")

    def process_chunk(self, rows: list[Post]) -> None:
        parsed: dict[Post, tuple[str, str]] = {}
        for post in rows:
            match = CATEGORY_PREFIX.match(post.title)
            if match and match[1].strip():
                name = string.capwords(match[1].strip())
                parsed[post] = (name, match[2].strip() or name)
        if not parsed:
            return
        categories = Category.objects.using(self.using)
        names = {name for name, _ in parsed.values()}
        categories.bulk_create([Category(name=n) for n in names], ignore_conflicts=True)
        ids = {
            name.lower(): pk
            for name, pk in categories.filter(name__in=names).values_list("name", "pk")
        }
        for post, (name, title) in parsed.items():
            post.category_id = ids[name.lower()]
            post.title = title
        self.write_rows(list(parsed), ["category", "title"])


@register
class CleanUpPosts(UpdateBackfill):
    """Trim titles, reset unknown statuses to draft, clamp future dates (set-based).

    Statuses compare with the column's collation: under MySQL/MariaDB's default
    case-insensitive collation "Published" is a known status and stays as it is.
    """

    model = "blog.Post"

    def get_queryset(self) -> QuerySet[Post]:
        return Post.objects.filter(
            Q(title__startswith=" ")
            | Q(title__endswith=" ")
            | ~Q(status__in=VALID_STATUSES)
            | Q(created_at__gt=Now())
        )

    def get_updates(self) -> dict[str, Any]:
        return {
            "title": Trim("title"),
            "status": Case(
                When(status__in=VALID_STATUSES, then=F("status")),
                default=Value(Post.Status.DRAFT),
            ),
            "created_at": Least("created_at", Now()),
        }


@register
class RemoveDuplicatePosts(Backfill):
    """Delete posts repeating an older post's title and author, keeping the oldest."""

    model = "blog.Post"
    requires = [("blog", "0003_categories_tags_metadata")]

    def process_chunk(self, rows: list[Post]) -> None:
        keys = {(post.title, post.author_id) for post in rows}
        keepers: dict[tuple[str, int | None], tuple[Any, int]] = {}
        same_titles = Post.objects.using(self.using).filter(title__in={t for t, _ in keys})
        for pk, title, author_id, created_at in same_titles.values_list(
            "pk", "title", "author_id", "created_at"
        ):
            key = (title, author_id)
            if key in keys and (key not in keepers or (created_at, pk) < keepers[key]):
                keepers[key] = (created_at, pk)
        doomed = [p.pk for p in rows if keepers[(p.title, p.author_id)][1] != p.pk]
        if doomed:
            # Through the ORM, so tags (the m2m rows) go with the posts.
            Post.objects.using(self.using).filter(pk__in=doomed).delete()


@register
class AssignDefaultCategoryAndTag(Backfill):
    """Give posts without a category "Uncategorized" and posts without tags "general"."""

    model = "blog.Post"
    requires = [("blog", "0003_categories_tags_metadata")]

    def get_queryset(self) -> QuerySet[Post]:
        tagged = Post.tags.through.objects.filter(post_id=OuterRef("pk"))
        return Post.objects.filter(Q(category__isnull=True) | ~Exists(tagged))

    def process_chunk(self, rows: list[Post]) -> None:
        default, _ = Category.objects.using(self.using).get_or_create(name="Uncategorized")
        general, _ = Tag.objects.using(self.using).get_or_create(name="general")
        uncategorized = [post for post in rows if post.category_id is None]
        for post in uncategorized:
            post.category_id = default.pk
        self.write_rows(uncategorized, ["category"])
        through = Post.tags.through.objects.using(self.using)
        tagged = set(
            through.filter(post_id__in=[p.pk for p in rows]).values_list("post_id", flat=True)
        )
        through.bulk_create(
            [
                Post.tags.through(post_id=p.pk, tag_id=general.pk)
                for p in rows
                if p.pk not in tagged
            ],
            ignore_conflicts=True,
        )


@register
class FillWordCounts(SQLBackfill):
    """Count the words of each post's body in SQL (no rows enter Python)."""

    model = "blog.Post"
    requires = [("blog", "0003_categories_tags_metadata")]
    _SPACES = (
        "CASE WHEN TRIM(body) = '' THEN 0 "
        "ELSE LENGTH(TRIM(body)) - LENGTH(REPLACE(TRIM(body), ' ', '')) + 1 END"
    )
    sql = {
        "postgresql": "UPDATE blog_post SET word_count = CASE WHEN btrim(body) = '' THEN 0 "
        "ELSE array_length(regexp_split_to_array(btrim(body), '\\s+'), 1) END "
        "WHERE {window} AND word_count IS NULL",
        # Words separated by single spaces (MySQL/SQLite have no portable regex split).
        "mysql": f"UPDATE blog_post SET word_count = {_SPACES} "
        "WHERE {window} AND word_count IS NULL",
        "sqlite": f"UPDATE blog_post SET word_count = {_SPACES} "
        "WHERE {window} AND word_count IS NULL",
    }
    reverse_sql = "UPDATE blog_post SET word_count = NULL WHERE {window}"


def describe(title: str, body: str, latency_ms: float) -> str:
    """A stand-in for an external SEO service: waits *latency_ms* (its round trip), then
    answers with a description built from the post."""
    if latency_ms > 0:
        time.sleep(latency_ms / 1000)
    words = " ".join(body.split()[:20])
    return f"{title}: {words}"[:150] if words else title[:150]


@register
class RefreshSeoDescriptions(RowBackfill):
    """Ask an (simulated) external SEO service for every post's description.

    Each row waits on the service, so one process mostly sleeps: run it with
    ``--workers N`` (PostgreSQL, MySQL/MariaDB) to keep N requests in flight.
    """

    model = "blog.Post"
    requires = [("blog", "0003_categories_tags_metadata")]
    fields = ["seo_description"]
    read_fields = ["title", "body"]
    parameters = {
        "latency_ms": Parameter(float, default=1.0, help="the service's round trip per post, ms")
    }

    def transform(self, row: Any) -> None:
        row.seo_description = describe(row.title, row.body, self.params.latency_ms)


@register
class FillTranslationSlugs(RowBackfill):
    """Fill each translation's slug from its title ("Café au lait" -> "cafe-au-lait").

    PostTranslation's primary key is ``(post, language)``: the walk goes through the
    translations in that order, and the checkpoint holds both columns."""

    model = "blog.PostTranslation"
    requires = [("blog", "0004_post_translations")]
    fields = ["slug"]
    read_fields = ["title"]

    def get_queryset(self) -> QuerySet[PostTranslation]:
        return PostTranslation.objects.filter(slug__isnull=True)

    def transform(self, row: Any) -> None:
        row.slug = base_slug(row.title)


from .inputs import *  # noqa: E402,F403  (registers the CSV backfill)
