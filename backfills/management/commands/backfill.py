"""``manage.py backfill <verb>``: dispatches to the verbs in ``backfills.cli``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from backfills.cli import SUBCOMMANDS
from backfills.cli.base import add_common_arguments, as_command_error, check_database, make_console
from backfills.exceptions import BackfillError


class Command(BaseCommand):
    help = "Run and inspect online backfills: chunked, checkpointed, resumable data changes."

    def add_arguments(self, parser: CommandParser) -> None:
        subparsers = parser.add_subparsers(
            dest="subcommand", required=True, title="subcommands", metavar="SUBCOMMAND"
        )
        for verb in SUBCOMMANDS:
            sub = subparsers.add_parser(verb.name, help=verb.help, description=verb.help)
            verb.add_arguments(sub)
            add_common_arguments(sub)

    def execute(self, *args: Any, **options: Any) -> Any:
        # Built here, from the options, like django-rich's RichCommand: call_command(stdout=...)
        # and --no-color / --force-color reach the console without reading Django's wrapper.
        self.console = make_console(options, options.get("stdout"))
        return super().execute(*args, **options)

    def handle(self, *args: Any, **options: Any) -> None:
        database = options["database"]
        databases = options.get("databases") or [database]
        for alias in databases:
            check_database(alias)
        verb_cls = next(verb for verb in SUBCOMMANDS if verb.name == options["subcommand"])
        if len(databases) > 1 and not verb_cls.takes_shards:
            raise CommandError(
                f"`backfill {verb_cls.name}` takes one --database; only `run --workers N` and "
                "`worker` take several (one run per alias)."
            )
        verb = verb_cls(
            stdout=self.stdout,
            stderr=self.stderr,
            console=self.console,
            database=database,
            databases=databases,
            verbosity=options.get("verbosity", 1),
        )
        try:
            verb.handle(**options)
        except (BackfillError, DatabaseError) as exc:
            raise as_command_error(exc, database) from exc
