"""``manage.py seed_posts --count N``: generate posts (and some translations) fast, with bulk
inserts."""

from __future__ import annotations

import random
import time
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, transaction
from django.utils import timezone

from blog.models import Post, PostTranslation

WORDS = [
    "async",
    "cache",
    "django",
    "python",
    "query",
    "index",
    "chunk",
    "backfill",
    "migration",
    "deploy",
    "schema",
    "table",
    "row",
    "column",
    "vacuum",
    "replica",
    "lag",
    "lock",
    "timeout",
    "cursor",
    "keyset",
    "offset",
    "signal",
    "worker",
    "queue",
    "batch",
    "latency",
    "throughput",
    "memory",
    "profile",
    "bench",
    "release",
    "review",
    "feature",
    "bug",
    "fix",
    "refactor",
    "test",
    "garden",
    "coffee",
    "travel",
    "winter",
    "summer",
    "mountain",
    "river",
    "city",
    "night",
    "morning",
    "music",
    "recipe",
    "bread",
    "tomato",
    "lemon",
    "book",
    "story",
    "letter",
    "bridge",
    "harbor",
    "forest",
    "island",
    "journey",
    "market",
]
# Titles that recur, as they do on any real blog: their slugs need -2, -3 ... suffixes.
COMMON = [
    "Hello world",
    "Weekly update",
    "Release notes",
    "Café au lait: l'été à Paris",
    'Ünïcödé & <Symbols> "quoted"',
    "!!!",
]
BATCH = 5000
# Translations' languages: their primary key is (post, language).
LANGUAGES = ["de", "fr", "es", "pt-BR", "ja", "zh-Hant"]
# Written as people do: the same category in several spellings.
CATEGORIES = ["News", "news", "Release Notes", "release notes", "Tutorials", "Opinion"]


class Command(BaseCommand):
    help = (
        "Insert N blog posts with bulk inserts (titles with some duplicates, no slugs), and "
        "translations of some of them (no slugs either)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--count", type=int, default=10_000, help="Posts to insert.")
        parser.add_argument("--authors", type=int, default=20, help="Users to spread them over.")
        parser.add_argument("--seed", type=int, default=42, help="Random seed.")
        parser.add_argument(
            "--duplicates",
            type=float,
            default=0.02,
            help="Share of posts whose title repeats a common one (0-1).",
        )
        parser.add_argument(
            "--messy",
            type=float,
            default=0.0,
            help="Share of posts (0-1) given each everyday defect the example backfills fix: "
            '"[Category] " title prefixes, padded titles, unknown statuses, future dates, '
            "exact duplicates.",
        )
        parser.add_argument(
            "--translations",
            type=float,
            default=0.1,
            help="Share of posts (0-1) translated into one to three languages.",
        )
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS)

    def handle(self, *args: Any, **options: Any) -> None:
        count, using = options["count"], options["database"]
        if count < 0:
            raise CommandError("--count must be >= 0.")
        for share in ("duplicates", "messy", "translations"):
            if not 0 <= options[share] <= 1:
                raise CommandError(f"--{share} must be between 0 and 1.")
        messy = options["messy"]
        rng = random.Random(options["seed"])
        # A generator of their own, so the posts stay what they were before translations.
        translating = random.Random(options["seed"] + 1)
        started = time.perf_counter()
        authors = self._authors(options["authors"], using)
        now = timezone.now()
        statuses = [s.value for s in Post.Status]
        common = COMMON + [
            " ".join(rng.choice(WORDS) for _ in range(3)).capitalize() for _ in range(500)
        ]
        made = translated = 0
        while made < count:
            batch = []
            for _ in range(min(BATCH, count - made)):
                if rng.random() < options["duplicates"]:
                    title = rng.choice(common)
                else:
                    words = [rng.choice(WORDS) for _ in range(rng.randint(4, 8))]
                    title = " ".join(words).capitalize() + f" {rng.randint(1, 10**6)}"
                body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 40)))
                post = Post(
                    title=title,
                    body=body,
                    status=rng.choice(statuses),
                    created_at=now - timedelta(minutes=rng.randint(0, 3 * 365 * 24 * 60)),
                    author=rng.choice(authors) if authors else None,
                    seo_title=title[:60],
                    seo_description=body[:150],
                )
                if messy:
                    self._make_messy(post, batch, rng, messy, now)
                batch.append(post)
            with transaction.atomic(using=using):
                Post.objects.using(using).bulk_create(batch)
                translated += self._translate(batch, translating, options["translations"], using)
            made += len(batch)
            if options["verbosity"] >= 2:
                self.stdout.write(f"{made:,}/{count:,}")
        elapsed = time.perf_counter() - started
        self.stdout.write(
            f"Inserted {made:,} posts and {translated:,} translations in {elapsed:.1f}s."
        )

    def _translate(self, batch: list[Post], rng: random.Random, share: float, using: str) -> int:
        """Translate about *share* of the just inserted *batch*; return how many rows."""
        if not share or not batch:
            return 0
        if batch[0].pk is None:  # MySQL returns no ids from a bulk insert: the newest are ours
            newest = Post.objects.using(using).order_by("-pk").values_list("pk", flat=True)
            for post, pk in zip(batch, list(newest[: len(batch)])[::-1], strict=True):
                post.pk = pk
        translations = [
            PostTranslation(post=post, language=language, title=f"{post.title} ({language})")
            for post in batch
            if rng.random() < share
            for language in rng.sample(LANGUAGES, rng.randint(1, 3))
        ]
        PostTranslation.objects.using(using).bulk_create(translations)
        return len(translations)

    def _make_messy(
        self, post: Post, batch: list[Post], rng: random.Random, share: float, now: Any
    ) -> None:
        if rng.random() < share:
            post.title = f"[{rng.choice(CATEGORIES)}] {post.title}"
        if rng.random() < share:
            post.title = f"  {post.title} "
        if rng.random() < share:
            post.status = rng.choice(["Published", "deleted", "", "DRAFT"])
        if rng.random() < share:
            post.created_at = now + timedelta(days=rng.randint(1, 400))
        if batch and rng.random() < share:
            original = rng.choice(batch)
            post.title, post.author = original.title, original.author
            post.created_at = original.created_at + timedelta(seconds=rng.randint(1, 10**6))

    def _authors(self, n: int, using: str) -> list[Any]:
        User = get_user_model()
        names = [f"author{i}" for i in range(n)]
        existing = {u.username: u for u in User.objects.using(using).filter(username__in=names)}
        missing = [User(username=name) for name in names if name not in existing]
        if missing:
            User.objects.using(using).bulk_create(missing)
        return list(User.objects.using(using).filter(username__in=names))
