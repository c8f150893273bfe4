"""Backfills of the blog app, found by django-backfills' autodiscovery."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from backfills import Backfill, register

from .models import Post
from .slugs import unique_slugs


@register
class PopulatePostSlugs(Backfill):
    """Fill Post.slug from the title; duplicates get -2, -3, ... suffixes."""

    model = "blog.Post"
    requires = [("blog", "0002_post_slug")]

    def get_queryset(self) -> QuerySet[Post]:
        return Post.objects.filter(slug__isnull=True)

    def process_chunk(self, rows: list[Any]) -> None:
        table = Post._base_manager.using(self.using)
        for post, slug in zip(rows, unique_slugs(table, [p.title for p in rows]), strict=True):
            post.slug = slug
        self.bulk_update(rows, ["slug"])
