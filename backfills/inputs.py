"""Backfills driven by an input instead of a table: any iterable with a cursor, and CSV files.

The runner walks an input the way it walks a table: a window of items after the checkpoint's
cursor, processed and committed together with the cursor of its last item, so an interruption
(``kill -9`` included) resumes exactly after the last committed item. What makes that exact
is that the *writes* go to the run's database in the chunk's transaction; reading the input
again from a cursor must give the same items (a file that does not change, an API page after
a key).

``InputBackfill``: implement ``items_after(cursor, limit)`` and ``cursor_of(item)`` and
``process_items(items)``. ``CSVBackfill``: a CSV file (``backfill run NAME --input
path.csv``), streamed from the byte offset of the checkpoint, never loaded whole; its cursor
is ``{"line": n, "offset": bytes}``, and the file's SHA-256 is recorded when the run starts so
a different file is refused on resume.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from .base import Backfill
from .chunking import Walk, Window
from .exceptions import BackfillConfigurationError
from .parameters import Parameter, ParameterError

#: The horizon of an input with no fingerprint: any text that is not None.
UNBOUNDED = "input"


class ItemsWalk(Walk):
    """Walks an ``InputBackfill``'s items: windows of ``items_after(cursor, size)``."""

    def __init__(self, backfill: InputBackfill) -> None:
        self.backfill = backfill

    def horizon(self) -> Any:
        return self.backfill.input_fingerprint() or UNBOUNDED

    def total(self, horizon: Any, exact: bool, estimate_above: int) -> tuple[int, bool]:
        count = self.backfill.count_items()
        return (0, False) if count is None else (count, True)

    def next_window(self, cursor: Any, horizon: Any, size: int) -> Window | None:
        items = list(self.backfill.items_after(cursor, size))
        if not items:
            return None
        upper = self.backfill.cursor_of(items[-1])
        return Window(cursor, upper, len(items), items=items)

    def dump(self, value: Any) -> str:
        return json.dumps(value)

    def load(self, text: Any) -> Any:
        return json.loads(text) if isinstance(text, str) else text

    def check_resume(self, stored_horizon: str | None) -> str | None:
        was = self.load(stored_horizon)
        if was in (None, UNBOUNDED):
            return None
        now = self.backfill.input_fingerprint()
        if now is None or now == was:
            return None
        return (
            f"its input changed since it started (it was {was}, it is {now}); resume with the "
            "same input, or pass --restart to start over with this one"
        )


class InputBackfill(Backfill):
    """A backfill over the items of an input instead of a table's rows: pages of an external
    API, keys listed by another database, a file.

    Implement:

    - ``items_after(cursor, limit)``: up to *limit* items after *cursor* (None: from the
      start), in a fixed order; the same cursor must give the same items again;
    - ``cursor_of(item)``: the cursor just after *item*, a JSON value (a number, a string, a
      list, a dict), stored with the chunk's writes;
    - ``process_items(items)`` (or ``process_chunk(items)``): write to the run's database
      (``self.using``) inside the chunk's transaction.

    Optional: ``count_items()`` for progress with a total; ``input_fingerprint()`` to refuse a
    resume over a different input; ``describe_item(item)`` for quarantine records.
    """

    #: The model the backfill writes, for listings (optional).
    model: ClassVar[Any] = None

    def get_walk(self) -> Walk:
        return ItemsWalk(self)

    @classmethod
    def check_walkable(cls) -> None:
        """Input backfills walk no table: nothing to check here beyond their hooks."""

    @classmethod
    def can_prefetch(cls, reverse: bool = False) -> bool:
        return False

    @classmethod
    def is_reversible(cls) -> bool:
        return False

    def items_after(self, cursor: Any, limit: int) -> Iterable[Any]:
        """Up to *limit* items after *cursor* (None: from the first), in a fixed order."""
        raise NotImplementedError(f"{type(self).__name__} must implement items_after().")

    def cursor_of(self, item: Any) -> Any:
        """The cursor just after *item* (JSON-serialisable)."""
        raise NotImplementedError(f"{type(self).__name__} must implement cursor_of().")

    def count_items(self) -> int | None:
        """How many items the input has (None: unknown; progress then shows no total)."""
        return None

    def input_fingerprint(self) -> str | None:
        """Text that changes when the input does (a hash); recorded when a run starts and
        compared when it resumes. None: not checked."""
        return None

    def describe_item(self, item: Any) -> str:
        """How a quarantine record names *item*."""
        return json.dumps(self.cursor_of(item))

    def process_items(self, items: list[Any]) -> int:
        """Apply one chunk of items; returns how many were processed. Runs inside the chunk's
        transaction. The default hands them to ``process_chunk``."""
        if items:
            self.process_chunk(items)
        return len(items)


@dataclass(frozen=True)
class CSVLine:
    """One record of a CSV file: its first physical line number (the header is line 1), its
    values by column name (text, as in the file) and where the record ends in the file."""

    line: int
    values: dict[str, str]
    end_line: int
    end_offset: int


class CSVBackfill(InputBackfill):
    """Apply each record of a CSV file: ``backfill run NAME --input path.csv``.

    ``columns`` names the columns the file must have, typed with ``Parameter`` (the same types
    and choices as parameters); ``process_rows(rows)`` gets each chunk's rows as dicts of
    typed values, with ``"_line"`` set to the record's line number. The file is streamed from
    the checkpoint's byte offset, never loaded whole. A value that does not parse fails the
    run with its line number, or, with ``quarantine = True``, quarantines that line (its
    number recorded) while the others go on. A run refuses to resume over a different file (its
    SHA-256 is recorded when it starts). Standard input is not accepted: it cannot be read
    again from a checkpoint.
    """

    #: The columns used, by header name, and their types.
    columns: ClassVar[Mapping[str, Parameter]] = {}
    #: The file's encoding: one that keeps ASCII's bytes (UTF-8, Latin-1...), since records
    #: are delimited on the bytes of quotes and newlines; a UTF-8 byte order mark is skipped.
    encoding: ClassVar[str] = "utf-8"
    delimiter: ClassVar[str] = ","
    #: The header as read from the file at this path (``header()``).
    _header: tuple[str, tuple[list[str], int, int]] | None = None
    parameters: ClassVar[Mapping[str, Parameter]] = {
        "input": Parameter(str, help="the CSV file (backfill run NAME --input PATH)")
    }

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A subclass's own parameters come in addition to `input`.
        if "input" not in cls.parameters:
            cls.parameters = {**CSVBackfill.parameters, **cls.parameters}

    @classmethod
    def check_walkable(cls) -> None:
        if not cls.columns:
            raise BackfillConfigurationError(
                f"Backfill {cls.name or cls.__name__} declares no `columns`."
            )

    # -- the file --------------------------------------------------------------------------

    @property
    def path(self) -> str:
        path = getattr(self.params, "input", None)
        if not path:
            raise BackfillConfigurationError(
                f"Backfill {self.name} needs its input file: backfill run {self.name} --input PATH."
            )
        return str(path)

    def _open(self) -> Any:
        try:
            return open(self.path, "rb")  # noqa: SIM115 - closed by the callers' with
        except OSError as exc:
            raise BackfillConfigurationError(
                f"Backfill {self.name}: cannot read {self.path}: {exc.strerror}."
            ) from None

    def _records(self, handle: Any, line: int) -> Iterator[tuple[int, list[str], int, int]]:
        """Records from the handle's position: (first line, fields, last line, end offset).
        A quoted value may span lines: a record ends where its quotes balance."""
        buffer, start, quotes = b"", line + 1, 0
        while raw := handle.readline():
            line += 1
            buffer += raw
            quotes += raw.count(b'"')
            if quotes % 2:
                continue  # inside a quoted value: the record goes on
            try:
                text = buffer.decode(self.encoding)
            except UnicodeDecodeError as exc:
                raise BackfillConfigurationError(
                    f"{self.path}: line {start} is not {self.encoding} text ({exc.reason}); set "
                    "`encoding` on the backfill."
                ) from None
            if start == 1:
                text = text.removeprefix("\ufeff")
            if text.strip("\r\n"):
                fields = next(csv.reader([text], delimiter=self.delimiter), [])
                yield start, fields, line, handle.tell()
            buffer, start, quotes = b"", line + 1, 0
        if buffer.strip():
            raise BackfillConfigurationError(
                f"{self.path}: line {start}: a quoted value is not closed before the end of the "
                "file."
            )

    def header(self) -> tuple[list[str], int, int]:
        """The header's names, the line it ends on and the byte offset after it (read once a
        file, not once a chunk); raises BackfillConfigurationError when a declared column is
        missing."""
        if self._header is None or self._header[0] != self.path:
            self._header = (self.path, self._read_header())
        return self._header[1]

    def _read_header(self) -> tuple[list[str], int, int]:
        with self._open() as handle:
            for _, names, line, offset in self._records(handle, 0):
                missing = [name for name in self.columns if name not in names]
                if missing:
                    raise BackfillConfigurationError(
                        f"{self.path}: the header has no column {', '.join(missing)} (it has: "
                        f"{', '.join(names)})."
                    )
                return names, line, offset
        raise BackfillConfigurationError(f"{self.path} is empty: it needs a header line.")

    def items_after(self, cursor: Any, limit: int) -> Iterable[CSVLine]:
        names, line, offset = self.header()
        if cursor is not None:
            line, offset = int(cursor["line"]), int(cursor["offset"])
        items: list[CSVLine] = []
        with self._open() as handle:
            handle.seek(offset)
            for first, fields, last, end in self._records(handle, line):
                items.append(CSVLine(first, dict(zip(names, fields, strict=False)), last, end))
                if len(items) >= limit:
                    break
        return items

    def cursor_of(self, item: CSVLine) -> Any:
        return {"line": item.end_line, "offset": item.end_offset}

    def describe_item(self, item: CSVLine) -> str:
        return f"line {item.line}"

    def count_items(self) -> int:
        _, line, offset = self.header()
        with self._open() as handle:
            handle.seek(offset)
            return sum(1 for _ in self._records(handle, line))

    def input_fingerprint(self) -> str:
        digest = hashlib.sha256()
        with self._open() as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
        size = os.path.getsize(self.path)
        return f"sha256:{digest.hexdigest()} ({size} bytes)"

    # -- the rows ----------------------------------------------------------------------------

    def parse(self, item: CSVLine) -> dict[str, Any]:
        """*item*'s declared columns as typed values (and ``"_line"``); raises
        ``ParameterError`` naming the line for a value that does not parse."""
        row: dict[str, Any] = {"_line": item.line}
        for name, column in self.columns.items():
            text = item.values.get(name)
            if text is None:
                raise ParameterError(f"line {item.line}: no value for column {name}.")
            if text == "" and not column.required:
                row[name] = column.default
                continue
            try:
                row[name] = column.parse(name, text)
            except ParameterError as exc:
                raise ParameterError(f"line {item.line}: {exc}") from None
        return row

    def process_items(self, items: list[CSVLine]) -> int:
        rows = [self.parse(item) for item in items]
        if rows:
            self.process_rows(rows)
        return len(rows)

    def process_rows(self, rows: list[dict[str, Any]]) -> None:
        """Apply one chunk of parsed rows (dicts of typed values by column, and ``"_line"``).
        Runs inside the chunk's transaction, on ``self.using``."""
        raise NotImplementedError(f"{type(self).__name__} must implement process_rows(rows).")
