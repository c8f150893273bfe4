from __future__ import annotations

from django.apps import AppConfig


class BackfillsConfig(AppConfig):
    """Registers the system checks and imports every installed app's ``backfills.py``."""

    name = "backfills"
    verbose_name = "Backfills"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the checks)
        from .registry import autodiscover

        autodiscover()
