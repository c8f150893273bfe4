"""Registry names, duplicates, misses, autodiscovery and system checks."""

from __future__ import annotations

from typing import Any

import pytest
from django.core import checks

from backfills import Backfill, RowBackfill
from backfills.checks import check_backfills
from backfills.exceptions import AlreadyRegistered, BackfillConfigurationError, NotRegistered
from backfills.registry import Registry, registry, snake_case


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("PopulatePostSlugs", "populate_post_slugs"),
        ("HTMLCleanup", "html_cleanup"),
        ("Fix2FAFlags", "fix2_fa_flags"),
        ("already_snake", "already_snake"),
    ],
)
def test_snake_case(name: str, expected: str) -> None:
    assert snake_case(name) == expected


def test_autodiscovery_registers_every_apps_backfills() -> None:
    assert "blog.populate_post_slugs" in registry
    assert "testapp.count_items" in registry
    assert registry.get("testapp.count_items").get_description() == "Count each Item once."


def test_default_name_is_app_label_and_snake_case_class_name() -> None:
    local = Registry()

    class FillThings(Backfill):
        model = "testapp.Item"

    FillThings.__module__ = "tests.testapp.backfills"
    local.register(FillThings)
    assert FillThings.name == "testapp.fill_things"
    assert local.get("testapp.fill_things") is FillThings


def test_duplicate_names_are_an_error_naming_both_classes() -> None:
    local = Registry()

    class One(Backfill):
        name = "app.same"

    class Two(Backfill):
        name = "app.same"

    local.register(One)
    with pytest.raises(AlreadyRegistered, match=r"'app.same' is used by both .*One and .*Two"):
        local.register(Two)


def test_unknown_name_lists_close_matches_and_everything_registered() -> None:
    with pytest.raises(NotRegistered) as excinfo:
        registry.get("testapp.count_itemz")
    message = str(excinfo.value)
    assert "No backfill named 'testapp.count_itemz'." in message
    assert "Did you mean: testapp.count_items" in message
    registered = message.split("Registered: ", 1)[1].rstrip(".").split(", ")
    assert registered == sorted(b.name for b in registry)


def test_bare_name_resolves_when_unambiguous() -> None:
    assert registry.get("populate_post_slugs").name == "blog.populate_post_slugs"


def test_empty_registry_says_where_to_define_backfills() -> None:
    with pytest.raises(NotRegistered, match="define them in an installed app's backfills.py"):
        Registry().get("x")


def test_unknown_model_and_composite_pk_are_configuration_errors() -> None:
    class Nowhere(Backfill):
        model = "nope.Missing"

    with pytest.raises(BackfillConfigurationError, match="'nope.Missing' is not an installed"):
        Nowhere.get_pk_field()

    class NoModel(Backfill):
        pass

    with pytest.raises(BackfillConfigurationError, match="does not set `model`"):
        NoModel.get_model()


def test_system_checks_report_broken_backfills() -> None:
    class Broken(Backfill):
        name = "testapp.broken"
        model = "nope.Missing"

    registry.register(Broken)
    try:
        ids = [m.id for m in check_backfills() if m.obj is Broken]
        assert ids == ["backfills.E001", "backfills.E002"]
        assert all(isinstance(m, checks.Error) for m in check_backfills() if m.obj is Broken)
    finally:
        registry.unregister("testapp.broken")
    assert check_backfills() == []


def test_system_check_reports_read_fields_that_are_not_columns() -> None:
    class ReadsNothing(RowBackfill):
        name = "testapp.reads_nothing"
        model = "testapp.Record"
        fields = ["text"]
        read_fields = ["no_such_column"]

        def transform(self, row: Any) -> None:
            row.text = "x"

    registry.register(ReadsNothing)
    try:
        (message,) = [m for m in check_backfills() if m.obj is ReadsNothing]
        assert message.id == "backfills.E003" and "no field 'no_such_column'" in message.msg
    finally:
        registry.unregister("testapp.reads_nothing")


def test_system_check_warns_when_prefetch_cannot_apply() -> None:
    class CountsAhead(Backfill):
        name = "testapp.counts_ahead"
        model = "testapp.Item"
        prefetch = True

        def process_chunk(self, rows: list[Any]) -> None:
            pass

    class WritesInItsWindowHook(RowBackfill):
        name = "testapp.writes_in_its_window_hook"
        model = "testapp.Record"
        fields = ["text"]
        prefetch = True

        def process_window(self, queryset: Any) -> int:
            return queryset.update(text="x")

    class ReadsAhead(WritesInItsWindowHook):
        name = "testapp.reads_ahead"
        process_window = RowBackfill.process_window

        def transform(self, row: Any) -> None:
            row.text = "x"

    classes = [CountsAhead, WritesInItsWindowHook, ReadsAhead]
    for cls in classes:
        registry.register(cls)
    try:
        found = {m.obj: (m.id, type(m)) for m in check_backfills() if m.obj in classes}
        assert found == {
            CountsAhead: ("backfills.W002", checks.Warning),
            WritesInItsWindowHook: ("backfills.W002", checks.Warning),
        }
    finally:
        for cls in classes:
            registry.unregister(cls.name)
