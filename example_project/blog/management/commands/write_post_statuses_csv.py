"""``manage.py write_post_statuses_csv PATH``: a sample input for ``blog.apply_post_statuses``."""

from __future__ import annotations

import csv
import random
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from blog.models import Post


class Command(BaseCommand):
    help = "Write a CSV of (id, status) lines for some posts, for blog.apply_post_statuses."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="The file to write.")
        parser.add_argument("--count", type=int, default=10_000, help="Lines to write.")
        parser.add_argument(
            "--bad", type=int, default=2, help="Lines with an invalid status (quarantined)."
        )
        parser.add_argument("--seed", type=int, default=1)

    def handle(self, *args: Any, **options: Any) -> None:
        count, bad = options["count"], options["bad"]
        if count < 1 or bad < 0 or bad > count:
            raise CommandError("--count must be at least 1 and --bad between 0 and --count.")
        ids = list(Post.objects.order_by("pk").values_list("pk", flat=True)[:count])
        if not ids:
            raise CommandError("There are no posts: run seed_posts first.")
        rng = random.Random(options["seed"])
        rng.shuffle(ids)
        broken = set(rng.sample(range(len(ids)), min(bad, len(ids))))
        statuses = [status.value for status in Post.Status]
        try:
            with open(options["path"], "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(["id", "status"])
                for index, pk in enumerate(ids):
                    writer.writerow([pk, "deleted" if index in broken else rng.choice(statuses)])
        except OSError as exc:
            raise CommandError(f"Cannot write {options['path']}: {exc.strerror}.") from None
        self.stdout.write(f"Wrote {len(ids):,} lines ({len(broken)} invalid) to {options['path']}.")
