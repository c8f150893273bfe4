"""The example project's backfills compute what they promise."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from backfills import Outcome, run_backfill
from blog.models import Post

pytestmark = pytest.mark.django_db(transaction=True)


def test_duplicate_titles_get_numbered_slugs() -> None:
    Post.objects.bulk_create(Post(title="Hello world") for _ in range(30))

    result = run_backfill("blog.populate_post_slugs", batch_size=7)

    assert result.outcome is Outcome.COMPLETED
    slugs = list(Post.objects.order_by("pk").values_list("slug", flat=True))
    assert slugs == ["hello-world"] + [f"hello-world-{n}" for n in range(2, 31)]


def test_slugs_for_unicode_punctuation_and_existing_slugs() -> None:
    Post.objects.create(title="taken", slug="cafe-au-lait")
    Post.objects.create(title="also taken", slug="cafe-au-lait-2")
    titles = ["Café au lait", "!!!", "!!!", 'Ünïcödé & <b>"x"</b>', "Café au lait"]
    Post.objects.bulk_create(Post(title=t) for t in titles)

    run_backfill("blog.populate_post_slugs", batch_size=2)

    got = list(Post.objects.order_by("pk").values_list("slug", flat=True))
    assert got == [
        "cafe-au-lait",
        "cafe-au-lait-2",
        "cafe-au-lait-3",
        "post",
        "post-2",
        "unicode-bxb",  # slugify drops punctuation, keeps the tag letters
        "cafe-au-lait-4",
    ]


def test_seeded_table_gets_unique_slugs_everywhere() -> None:
    call_command("seed_posts", count=3000, duplicates=0.3, verbosity=0)
    run_backfill("blog.populate_post_slugs", batch_size=500)
    slugs = list(Post.objects.values_list("slug", flat=True))
    assert None not in slugs and len(slugs) == len(set(slugs)) == 3000
