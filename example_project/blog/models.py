from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Category(models.Model):
    name = models.CharField(max_length=100, unique=True)

    class Meta:
        verbose_name_plural = "categories"

    def __str__(self) -> str:
        return self.name


class Tag(models.Model):
    name = models.CharField(max_length=50, unique=True)

    def __str__(self) -> str:
        return self.name


class Post(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft"
        PUBLISHED = "published"
        ARCHIVED = "archived"

    title = models.CharField(max_length=200)
    # Added nullable in 0002 so the column can be added without rewriting the table; the
    # populate_post_slugs backfill fills it.
    slug = models.SlugField(max_length=255, null=True, blank=True, unique=True)
    body = models.TextField(blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="posts",
    )
    # 0003: the SEO columns move into `metadata` (build_post_metadata, reversible); posts get
    # a category (normalise_post_categories) and tags; word_count is filled by SQL.
    seo_title = models.CharField(max_length=200, blank=True, default="")
    seo_description = models.TextField(blank=True, default="")
    metadata = models.JSONField(null=True, blank=True)
    category = models.ForeignKey(
        Category, null=True, blank=True, on_delete=models.SET_NULL, related_name="posts"
    )
    tags = models.ManyToManyField(Tag, blank=True, related_name="posts")
    word_count = models.IntegerField(null=True, blank=True)

    class Meta:
        # For remove_duplicate_posts: find a chunk's duplicates without scanning the table.
        indexes = [models.Index(fields=["title", "author"], name="blog_post_title_author")]

    def __str__(self) -> str:
        return self.title


class PostTranslation(models.Model):
    """A post in another language, keyed by (post, language): a composite primary key.

    Translations arrive from translators without slugs; fill_translation_slugs fills them."""

    pk = models.CompositePrimaryKey("post", "language")
    post = models.ForeignKey(Post, on_delete=models.CASCADE, related_name="translations")
    language = models.CharField(max_length=8)
    title = models.CharField(max_length=200)
    slug = models.SlugField(max_length=255, null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.title} ({self.language})"
