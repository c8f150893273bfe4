"""The admin's forms: a backfill's typed parameters as form fields, the workers, the settings."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from typing import Any

from django import forms

from .. import profiles
from ..base import Backfill
from ..parameters import Parameter, ParameterError, parse_parameters, to_json

#: Form fields for the parameter types ``backfills.parameters`` parses.
_FIELDS: dict[type, type[forms.Field]] = {
    bool: forms.NullBooleanField,
    int: forms.IntegerField,
    float: forms.FloatField,
    decimal.Decimal: forms.DecimalField,
    dt.date: forms.DateField,
    dt.datetime: forms.DateTimeField,
    uuid.UUID: forms.UUIDField,
    str: forms.CharField,
}


PROFILE_HELP = (
    "gentle: short chunks, a tight blocking guard, working half the time; balanced: the "
    "settings; fast: long chunks, a looser guard."
)


def profile_field(required: bool) -> forms.ChoiceField:
    """A select of the profiles (empty: the backfill's or the setting's, or unchanged)."""
    choices = [] if required else [("", "---------")]
    return forms.ChoiceField(
        choices=choices + [(name, name) for name in profiles.NAMES],
        required=required,
        help_text=PROFILE_HELP,
    )


def parameter_field(parameter: Parameter) -> forms.Field:
    """The form field for one declared parameter: its type's field (a choice among its
    choices), required when it has no default, its default as the initial value."""
    initial = None if parameter.required else parameter.default
    common: dict[str, Any] = {
        "required": parameter.required,
        "help_text": parameter.help,
        "initial": initial,
    }
    if parameter.choices is not None:
        choices = [("", "---------")] if not parameter.required else []
        choices += [(str(choice), str(choice)) for choice in parameter.choices]
        return forms.ChoiceField(choices=choices, **common)
    field_class = _FIELDS.get(parameter.type, forms.CharField)
    if field_class is forms.NullBooleanField:
        common["required"] = False  # "unknown" means the default
    return field_class(**common)


class StartForm(forms.Form):
    """Start a run: the backfill's parameters, how many workers, and whether to start again
    after a completed run. Values are checked by the parameters' own types (a bad value is a
    form error and nothing starts)."""

    workers = forms.IntegerField(
        min_value=1,
        max_value=64,
        initial=1,
        help_text="Drain tasks (or `backfill worker` processes) sharing the run's partitions.",
    )
    restart = forms.BooleanField(
        required=False,
        label="Start again from the beginning",
        help_text="Needed after a completed run.",
    )
    profile = profile_field(required=False)

    def __init__(self, backfill_cls: type[Backfill], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.backfill_cls = backfill_cls
        self.parameter_names = list(backfill_cls.parameters)
        for name, parameter in backfill_cls.parameters.items():
            self.fields[name] = parameter_field(parameter)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        given: dict[str, Any] = {}
        for name in self.parameter_names:
            value = cleaned.get(name)
            if value is not None and value != "":  # empty: the default
                given[name] = value
        try:
            # Text (a choice, a str) is parsed by the parameter's type, typed values checked.
            parse_parameters(
                self.backfill_cls.name or "",
                {key: self.backfill_cls.parameters[key] for key in given},
                given,
            )
        except ParameterError as exc:
            raise forms.ValidationError(str(exc)) from None
        cleaned["parameters"] = given
        return cleaned

    def parameters(self) -> dict[str, Any]:
        """The given parameters (typed), for ``control.start`` and ``dry_run``."""
        return dict(self.cleaned_data.get("parameters", {}))

    def command(self, name: str) -> str:
        """The command that starts the same run from a shell."""
        parts = ["python manage.py backfill run", name]
        values = to_json(self.parameters()) if self.is_bound and self.is_valid() else {}
        for key, value in values.items():
            parts.append(f"--param {key}={value}")
        workers = self.cleaned_data.get("workers") if self.is_bound and self.is_valid() else 1
        parts.append(f"--workers {workers or 1}")
        if self.is_bound and self.is_valid() and self.cleaned_data.get("profile"):
            parts.append(f"--profile {self.cleaned_data['profile']}")
        if self.is_bound and self.is_valid() and self.cleaned_data.get("restart"):
            parts.append("--restart")
        return " ".join(parts)


class SettingsForm(forms.Form):
    """Change a run's chunk size, target chunk time, sleep, profile or duty cycle
    (``control.change_settings``)."""

    batch_size = forms.IntegerField(
        required=False, min_value=1, help_text="A fixed chunk size; empty: adaptive sizing."
    )
    target_chunk_time = forms.FloatField(
        required=False, min_value=0.001, help_text="Seconds a chunk should take (adaptive)."
    )
    sleep = forms.FloatField(required=False, min_value=0, help_text="Seconds between chunks.")
    profile = profile_field(required=False)
    max_duty = forms.FloatField(
        required=False,
        min_value=0.01,
        max_value=1,
        label="Max duty",
        help_text="The largest fraction of the time spent working (1: no rest).",
    )

    @staticmethod
    def current(run: Any) -> dict[str, Any]:
        """The run's values, as the form shows them (a duty of None reads 1: no rest)."""
        return {
            "batch_size": run.batch_size,
            "target_chunk_time": run.target_chunk_time,
            "sleep": run.sleep,
            "profile": run.profile,
            "max_duty": run.max_duty or 1.0,
        }

    def changes(self, current: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments for ``control.change_settings``: what was given and differs
        from *current* (``current(run)``), so the form's prefilled values do not override a
        profile's. A batch size cleared on a run with a fixed one is ``batch_size=None``:
        back to adaptive sizing."""
        changes = {
            key: value
            for key, value in self.cleaned_data.items()
            if value is not None and value != "" and value != current.get(key)
        }
        # Only an empty batch size means something (adaptive); an empty time, sleep, profile
        # or duty leaves it as it is.
        if self.cleaned_data.get("batch_size") is None and current.get("batch_size") is not None:
            changes["batch_size"] = None
        return changes
