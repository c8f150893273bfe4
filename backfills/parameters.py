"""Typed backfill parameters, given on the command line as ``--param key=value``."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .exceptions import BackfillError

REQUIRED: Any = object()

_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n"}


class ParameterError(BackfillError):
    """A parameter is unknown, missing or not of its declared type."""


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"expected one of {sorted(_TRUE | _FALSE)}")


_PARSERS: dict[type, Callable[[str], Any]] = {
    bool: _parse_bool,
    int: int,
    float: float,
    str: str,
    decimal.Decimal: decimal.Decimal,
    dt.date: dt.date.fromisoformat,
    dt.datetime: dt.datetime.fromisoformat,
    uuid.UUID: uuid.UUID,
}


@dataclass(frozen=True)
class Parameter:
    """One declared parameter: its type, default (REQUIRED if none), help and choices."""

    type: type = str
    default: Any = REQUIRED
    help: str = ""
    choices: Sequence[Any] | None = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def check(self, name: str, value: Any) -> Any:
        """A typed value given from code: check its type and choices."""
        if not isinstance(value, self.type):
            raise ParameterError(f"Parameter {name}={value!r} is not a {self.type.__name__}.")
        if self.choices is not None and value not in self.choices:
            raise ParameterError(f"Parameter {name}={value!r} is not one of {list(self.choices)}.")
        return value

    def parse(self, name: str, text: str) -> Any:
        parser = _PARSERS.get(self.type, self.type)
        try:
            value = parser(text)
        except (ValueError, TypeError, decimal.InvalidOperation) as exc:
            raise ParameterError(
                f"Parameter {name}={text!r} is not a valid {self.type.__name__}: {exc}"
            ) from None
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(str(choice) for choice in self.choices)
            raise ParameterError(f"Parameter {name}={text!r} must be one of: {allowed}.")
        return value


def split_assignments(assignments: Iterable[str]) -> dict[str, str]:
    """``["days=30", "status=draft"]`` -> ``{"days": "30", "status": "draft"}``."""
    raw: dict[str, str] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ParameterError(f"--param expects key=value, got {item!r}.")
        raw[key.strip()] = value
    return raw


def check_given(name: str, declared: Mapping[str, Parameter], raw: Mapping[str, Any]) -> None:
    """Refuse unknown names and values that do not parse, without asking for required ones
    (a run that resumes has its own): what is checked before anything else happens."""
    _refuse_unknown(name, declared, raw)
    parse_parameters(name, {key: declared[key] for key in raw}, raw)


def _refuse_unknown(name: str, declared: Mapping[str, Parameter], raw: Mapping[str, Any]) -> None:
    unknown = sorted(set(raw) - set(declared))
    if unknown:
        known = ", ".join(sorted(declared)) or "none"
        raise ParameterError(
            f"Unknown parameter(s) for {name}: {', '.join(unknown)}. Declared: {known}."
        )


def parse_parameters(
    name: str, declared: Mapping[str, Parameter], raw: Mapping[str, Any]
) -> dict[str, Any]:
    """Typed values for every declared parameter, from *raw* text values and defaults."""
    _refuse_unknown(name, declared, raw)
    values: dict[str, Any] = {}
    for key, parameter in declared.items():
        if key in raw:
            given = raw[key]
            values[key] = (
                parameter.parse(key, given)
                if isinstance(given, str)
                else parameter.check(key, given)
            )
        elif parameter.required:
            hint = f" ({parameter.help})" if parameter.help else ""
            raise ParameterError(
                f"Backfill {name} needs --param {key}=<{parameter.type.__name__}>{hint}."
            )
        else:
            values[key] = parameter.default
    return values


def to_json(values: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as stored on the run (JSON): dates, decimals and UUIDs become text."""
    stored: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, bool | int | float | str) or value is None:
            stored[key] = value
        elif isinstance(value, dt.date | dt.datetime):
            stored[key] = value.isoformat()
        else:
            stored[key] = str(value)
    return stored


def from_json(declared: Mapping[str, Parameter], stored: Mapping[str, Any]) -> dict[str, Any]:
    """Typed values back from a run's stored parameters."""
    values: dict[str, Any] = {}
    for key, parameter in declared.items():
        if key not in stored:
            values[key] = None if parameter.required else parameter.default
            continue
        value = stored[key]
        values[key] = (
            parameter.parse(key, value)
            if isinstance(value, str) and parameter.type is not str
            else value
        )
    return values
