"""Name -> Backfill class registry, filled by ``register`` as apps' ``backfills.py`` import."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, TypeVar

from django.apps import apps

from .exceptions import AlreadyRegistered, NotRegistered

if TYPE_CHECKING:
    from .base import Backfill

B = TypeVar("B", bound="type[Backfill]")

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake_case(name: str) -> str:
    """``PopulatePostSlugs`` -> ``populate_post_slugs``; ``HTMLCleanup`` -> ``html_cleanup``."""
    return _CAMEL.sub("_", name).lower()


def default_name(cls: type[Backfill]) -> str:
    """``app_label.snake_case_class_name`` for the app whose module defines *cls*."""
    app_config = apps.get_containing_app_config(cls.__module__)
    label = app_config.label if app_config else cls.__module__.split(".")[0]
    return f"{label}.{snake_case(cls.__name__)}"


class Registry:
    """Holds every registered backfill class by its name."""

    def __init__(self) -> None:
        self._by_name: dict[str, type[Backfill]] = {}

    def register(self, cls: B) -> B:
        """Add *cls* under its name; a second class with the same name is an error."""
        name = cls.name or default_name(cls)
        existing = self._by_name.get(name)
        if existing is not None and _qualname(existing) != _qualname(cls):
            raise AlreadyRegistered(
                f"Backfill name {name!r} is used by both {_qualname(existing)} and "
                f"{_qualname(cls)}. Set a distinct `name` on one of them."
            )
        cls.name = name
        self._by_name[name] = cls
        return cls

    def unregister(self, name: str) -> None:
        """Remove *name* (tests use this to keep the registry clean)."""
        self._by_name.pop(name, None)

    def get(self, name: str) -> type[Backfill]:
        """Return the class registered as *name*, or explain what is registered instead."""
        try:
            return self._by_name[name]
        except KeyError:
            pass
        names = sorted(self._by_name)
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        # Accept a bare class-part ("populate_post_slugs") when it is unambiguous.
        suffix = [n for n in names if n.split(".", 1)[-1] == name]
        if len(suffix) == 1:
            return self._by_name[suffix[0]]
        message = f"No backfill named {name!r}."
        if close or suffix:
            message += " Did you mean: " + ", ".join(dict.fromkeys(suffix + close)) + "?"
        message += (
            " Registered: " + ", ".join(names) + "."
            if names
            else " No backfills are registered: define them in an installed app's backfills.py."
        )
        raise NotRegistered(message)

    def __iter__(self) -> Iterator[type[Backfill]]:
        return iter(self._by_name[name] for name in sorted(self._by_name))

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __len__(self) -> int:
        return len(self._by_name)


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


registry = Registry()


def register(cls: B) -> B:
    """Class decorator: make a Backfill subclass runnable by name."""
    return registry.register(cls)


def autodiscover() -> None:
    """Import ``backfills.py`` from every installed app, like the admin's autodiscover()."""
    from django.utils.module_loading import autodiscover_modules

    autodiscover_modules("backfills", register_to=None)
