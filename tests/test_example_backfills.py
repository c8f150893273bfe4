"""The example project's backfills compute what they promise."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.core.management import call_command
from django.utils.text import slugify

from backfills import Outcome, run_backfill
from blog.models import Category, Post, PostTranslation, Tag

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


def make_post(title: str, **fields: object) -> Post:
    return Post.objects.create(title=title, **fields)


def test_metadata_is_built_and_the_reverse_moves_it_back() -> None:
    call_command("seed_posts", count=300, verbosity=0)
    Post.objects.filter(pk=Post.objects.order_by("pk")[0].pk).update(
        seo_title='L\'été "quoted"', seo_description=""
    )
    before = list(Post.objects.order_by("pk").values_list("pk", "seo_title", "seo_description"))

    run_backfill("blog.build_post_metadata")

    for pk, title, description in before:
        post = Post.objects.get(pk=pk)
        assert post.metadata == {"seo": {"title": title, "description": description}}
    Post.objects.update(seo_title="", seo_description="")  # the columns can now be dropped

    result = run_backfill("blog.build_post_metadata", reverse=True)

    assert result.outcome is Outcome.COMPLETED
    after = list(Post.objects.order_by("pk").values_list("pk", "seo_title", "seo_description"))
    assert after == before
    assert not Post.objects.filter(metadata__isnull=False).exists()


def test_category_prefixes_become_categories() -> None:
    make_post("[News] Launch day")
    make_post("[news]   Spelled differently")
    make_post("[Release notes] 1.0")
    make_post("[] not a category")
    make_post("No prefix")

    run_backfill("blog.normalise_post_categories", batch_size=2)

    got = list(Post.objects.order_by("pk").values_list("title", "category__name"))
    assert got == [
        ("Launch day", "News"),
        ("Spelled differently", "News"),
        ("1.0", "Release Notes"),
        ("[] not a category", None),
        ("No prefix", None),
    ]
    assert Category.objects.count() == 2


def test_clean_up_is_set_based_and_fixes_each_defect() -> None:
    from datetime import timedelta

    from django.utils import timezone

    now = timezone.now()
    future = make_post("  padded  ", status="published", created_at=now + timedelta(days=30))
    wrong = make_post("fine", status="deleted")
    fine = make_post("fine too", status="archived", created_at=now - timedelta(days=3))

    result = run_backfill("blog.clean_up_posts")

    assert result.run.rows_processed == 2  # only the rows that needed it were updated
    future.refresh_from_db()
    wrong.refresh_from_db()
    assert (future.title, future.status) == ("padded", "published")
    assert now - timedelta(minutes=5) < future.created_at <= timezone.now()
    assert (wrong.title, wrong.status) == ("fine", "draft")
    assert Post.objects.get(pk=fine.pk).created_at == fine.created_at


def test_duplicates_are_removed_keeping_the_oldest() -> None:
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.utils import timezone

    alice = get_user_model().objects.create(username="alice")
    bob = get_user_model().objects.create(username="bob")
    now = timezone.now()
    newer = make_post("Same", author=alice, created_at=now)
    oldest = make_post("Same", author=alice, created_at=now - timedelta(days=2))
    other_author = make_post("Same", author=bob, created_at=now)
    tagged_dup = make_post("Same", author=alice, created_at=now - timedelta(days=1))
    tagged_dup.tags.add(Tag.objects.create(name="t"))
    unique = make_post("Different", author=alice)

    run_backfill("blog.remove_duplicate_posts", batch_size=2)

    assert set(Post.objects.values_list("pk", flat=True)) == {oldest.pk, other_author.pk, unique.pk}
    assert not Post.objects.filter(pk__in=[newer.pk, tagged_dup.pk]).exists()
    assert not Post.tags.through.objects.exists()


def test_default_category_and_tag() -> None:
    news = Category.objects.create(name="News")
    featured = Tag.objects.create(name="featured")
    has_both = make_post("a", category=news)
    has_both.tags.add(featured)
    bare = make_post("b")
    make_post("c", category=news)

    run_backfill("blog.assign_default_category_and_tag")

    rows = {
        p.title: (p.category.name, sorted(t.name for t in p.tags.all()))
        for p in Post.objects.prefetch_related("tags").select_related("category")
    }
    assert rows == {
        "a": ("News", ["featured"]),
        "b": ("Uncategorized", ["general"]),
        "c": ("News", ["general"]),
    }
    # Nothing is left to do: a new run finds no row needing work.
    rerun = run_backfill("blog.assign_default_category_and_tag", restart=True)
    assert rerun.run.rows_processed == 0
    assert Post.objects.get(pk=bare.pk).category.name == "Uncategorized"


def test_word_counts_in_sql_and_reverse() -> None:
    make_post("x", body="one two three")
    make_post("y", body="")
    make_post("z", body="  padded words  ")

    run_backfill("blog.fill_word_counts")

    assert list(Post.objects.order_by("pk").values_list("word_count", flat=True)) == [3, 0, 2]
    run_backfill("blog.fill_word_counts", reverse=True)
    assert set(Post.objects.values_list("word_count", flat=True)) == {None}


def test_every_example_backfill_on_messy_seeded_data() -> None:
    call_command("seed_posts", count=2000, messy=0.1, duplicates=0.1, verbosity=0)
    for name in (
        "blog.clean_up_posts",
        "blog.normalise_post_categories",
        "blog.remove_duplicate_posts",
        "blog.populate_post_slugs",
        "blog.build_post_metadata",
        "blog.assign_default_category_and_tag",
        "blog.fill_word_counts",
        "blog.fill_translation_slugs",
    ):
        assert run_backfill(name).outcome is Outcome.COMPLETED, name
    assert not Post.objects.filter(title__startswith="[").exists()
    assert not Post.objects.exclude(status__in=["draft", "published", "archived"]).exists()
    assert not Post.objects.filter(category__isnull=True).exists()
    assert not Post.objects.filter(slug__isnull=True).exists()
    assert not Post.objects.filter(word_count__isnull=True).exists()
    assert not PostTranslation.objects.filter(slug__isnull=True).exists()
    keys = list(Post.objects.values_list("title", "author_id"))
    assert len(keys) == len(set(keys)) < 2000


def test_dry_run_shows_bracketed_values_literally(
    run_command: Callable[..., tuple[str, str]],
) -> None:
    make_post("[release notes] 2.0")

    out, _ = run_command("run", "blog.normalise_post_categories", "--dry-run")

    # Table cells are data, not rich markup: "[release notes]" must not vanish.
    assert "'[release notes] 2.0'" in out and "'2.0'" in out
    assert Post.objects.get().title == "[release notes] 2.0"


def test_post_check_failure_marks_the_run_failed_and_a_rerun_rechecks() -> None:
    from backfills.events import ChunkCommitted, Event
    from backfills.exceptions import BackfillFailed
    from backfills.models import BackfillRun

    Post.objects.bulk_create(Post(title=f"Post {n}") for n in range(20))

    def app_inserts_a_post_without_slug(event: Event) -> None:
        if isinstance(event, ChunkCommitted) and event.run.chunks_done == 1:
            make_post("Written by the application, above the horizon")

    with pytest.raises(BackfillFailed, match="post_check failed: 1 posts still have no slug"):
        run_backfill(
            "blog.populate_post_slugs", batch_size=5, listeners=[app_inserts_a_post_without_slug]
        )
    run = BackfillRun.objects.get()
    assert run.state == "failed" and run.rows_scanned == 20
    assert run.error_class == "backfills.exceptions.CheckFailed"

    # The application fixes its own row; running again re-checks and completes.
    Post.objects.filter(slug__isnull=True).update(slug="written-by-the-app")
    assert run_backfill("blog.populate_post_slugs").outcome is Outcome.COMPLETED


def test_read_fields_records_carry_foreign_keys_by_attname() -> None:
    from typing import Any

    from backfills import RowBackfill

    news, tech = Category.objects.create(name="News"), Category.objects.create(name="Tech")
    Post.objects.bulk_create(
        [Post(title=f"p{i}", category=news if i % 2 else None) for i in range(6)]
    )

    class MoveNewsToTech(RowBackfill):
        name = "blog.move_news_to_tech"
        model = "blog.Post"
        read_fields = ["title"]
        fields = ["category"]  # read and written as category_id

        def transform(self, row: Any) -> bool:
            assert not hasattr(row, "category") and isinstance(row.title, str)
            if row.category_id != news.pk:
                return False
            row.category_id = tech.pk
            return True

    result = run_backfill(MoveNewsToTech)

    assert result.outcome is Outcome.COMPLETED and result.run.rows_processed == 3
    assert sorted(Post.objects.values_list("category__name", flat=True), key=str) == [
        None,
        None,
        None,
        "Tech",
        "Tech",
        "Tech",
    ]


def test_seo_descriptions_come_from_the_service_with_its_latency() -> None:
    make_post("Short", body="one two   three")
    make_post("Empty body", body="", seo_description="stale")
    make_post("Long", body=" ".join(f"w{n}" for n in range(30)))

    result = run_backfill(
        "blog.refresh_seo_descriptions", parameters={"latency_ms": "0.5"}, batch_size=2
    )

    assert result.outcome is Outcome.COMPLETED and result.run.rows_processed == 3
    assert result.run.parameters == {"latency_ms": 0.5}
    got = list(Post.objects.order_by("pk").values_list("seo_description", flat=True))
    assert got == [
        "Short: one two three",
        "Empty body",
        "Long: " + " ".join(f"w{n}" for n in range(20)),
    ]


def test_translation_slugs_walk_the_composite_key() -> None:
    import json

    call_command("seed_posts", count=400, translations=0.5, verbosity=0)
    cafe = make_post("Café")
    PostTranslation.objects.bulk_create(
        [
            PostTranslation(post=cafe, language="fr", title="Café au lait: l'été à Paris"),
            PostTranslation(post=cafe, language="ja", title="!!!"),
            PostTranslation(post=cafe, language="de", title="Schon da", slug="kept"),
        ]
    )
    total = PostTranslation.objects.count()
    assert total > 200

    result = run_backfill("blog.fill_translation_slugs", batch_size=7)

    assert result.outcome is Outcome.COMPLETED
    assert (result.run.rows_scanned, result.run.rows_processed) == (total, total - 1)
    assert dict(cafe.translations.values_list("language", "slug")) == {
        "fr": "cafe-au-lait-lete-a-paris",
        "ja": "post",
        "de": "kept",
    }
    for title, slug in PostTranslation.objects.exclude(post=cafe).values_list("title", "slug"):
        assert slug == slugify(title), title
    # The checkpoint is the last (post, language) walked, as JSON.
    last = PostTranslation.objects.order_by("post", "language").values_list("post", "language")
    assert json.loads(result.run.cursor) == list(last.last())
