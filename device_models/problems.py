"""Problems found in Device / DeviceModel documents: where (file, object, field path), what value, and why.

Field paths follow the user's YAML: ``spec.properties[name=setpoint].visitors.configData.register``. A list
item that has a ``name`` (or ``propertyName``) is shown by it, which is how users find it in their file.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

Severity = Literal["error", "warning"]
Location = Sequence[str | int]

# Keys that identify a list item better than its index, in order of preference.
_ITEM_KEYS = ("name", "propertyName")
_MAX_VALUE_REPR = 120


class _NoValue(enum.Enum):
    NO_VALUE = enum.auto()


NO_VALUE = _NoValue.NO_VALUE
"""Marks a problem about a value that is absent (a required field), as opposed to a bad value."""


@dataclasses.dataclass(frozen=True)
class Problem:
    """One problem in a document: ``path`` and ``value`` say where and what, ``message`` says why."""

    path: str
    """Where in the object, e.g. ``spec.properties[name=setpoint].desired.value`` ("" for the whole text)."""
    message: str
    """Why, e.g. "is above the maximum 35"."""
    value: object = NO_VALUE
    """The bad value, or :data:`NO_VALUE` when the problem is a missing value."""
    severity: Severity = "error"
    source: str | None = None
    """The file (or other text source) the object came from."""
    obj: str | None = None
    """The object at fault, as ``"<Kind> <namespace>/<name>"``."""

    @property
    def has_value(self) -> bool:
        """False when the problem is an absent value (a required field), True when it is about a bad value."""
        return self.value is not NO_VALUE

    @property
    def is_error(self) -> bool:
        """True for an error, False for a warning (which does not make a document invalid)."""
        return self.severity == "error"

    def located(self, *, source: str | None = None, obj: str | None = None) -> Problem:
        """Return this problem with its file and object filled in (existing ones are kept)."""
        return dataclasses.replace(self, source=self.source or source, obj=self.obj or obj)

    def __str__(self) -> str:
        where = [part for part in (self.source, self.obj, self.path) if part]
        what = f"{_short_repr(self.value)} {self.message}" if self.has_value else self.message
        return ": ".join([*where, what])


def _short_repr(value: object) -> str:
    text = repr(value.value if isinstance(value, enum.Enum) else value)
    return text if len(text) <= _MAX_VALUE_REPR else text[: _MAX_VALUE_REPR - 3] + "..."


_FIELD_ERROR = "field_error"


def field_error(loc: str | Location, message: str, value: object = NO_VALUE) -> PydanticCustomError:
    """An error for a model validator to raise that blames one field (``loc``, relative to the model).

    Cross-field rules run after field validation, so pydantic would place them on the model as a whole;
    this keeps the path (and the bad value) on the field the user must fix.
    """
    path = (loc,) if isinstance(loc, str) else tuple(loc)
    return PydanticCustomError(_FIELD_ERROR, message, {"loc": path, "value": value})


def format_path(loc: Location, document: object = None) -> str:
    """Render a pydantic-style location as a YAML field path, naming list items by ``document``'s content."""
    out = ""
    node: object = document
    for segment in loc:
        if isinstance(segment, int) and not isinstance(segment, bool):
            item = node[segment] if isinstance(node, list) and 0 <= segment < len(node) else None
            out += f"[{_item_label(item, segment)}]"
            node = item
        else:
            out += f".{segment}" if out else str(segment)
            node = node.get(segment) if isinstance(node, Mapping) else None
    return out


def _item_label(item: object, index: int) -> str:
    if isinstance(item, Mapping):
        for key in _ITEM_KEYS:
            label = item.get(key)
            if isinstance(label, str) and label:
                return f"{key}={label}"
    return str(index)


def problems_from_validation_error(
    exc: ValidationError, document: object = None, prefix: Location = ()
) -> list[Problem]:
    """Translate a pydantic ``ValidationError`` into problems with user-facing paths and reasons.

    ``document`` is the raw input (used to name list items), ``prefix`` the location of the validated value
    inside it.
    """
    return [_problem_from_error(error, document, prefix) for error in exc.errors(include_url=False)]


def _problem_from_error(error: ErrorDetails, document: object, prefix: Location) -> Problem:
    loc: list[str | int] = [*prefix, *error["loc"]]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    value: object = error.get("input", NO_VALUE)
    kind = error["type"]
    if kind == _FIELD_ERROR:
        # A cross-field rule of a model validator: it names the field it blames.
        loc.extend(ctx["loc"])
        value = ctx["value"]
    if kind == "missing":
        value = NO_VALUE
    return Problem(path=format_path(loc, document), message=_reason(error, ctx), value=value)


_REASONS = {
    "missing": "is required",
    "extra_forbidden": "is not a known field",
    "int_parsing": "is not an integer",
    "int_type": "is not an integer",
    "int_from_float": "is not an integer",
    "float_parsing": "is not a number",
    "float_type": "is not a number",
    "finite_number": "is not a finite number",
    "bool_parsing": "is not a boolean (true or false)",
    "bool_type": "is not a boolean (true or false)",
    "string_type": "is not a string",
    "dict_type": "is not a mapping",
    "model_type": "is not a mapping",
    "model_attributes_type": "is not a mapping",
    "list_type": "is not a list",
    "bytes_type": "is not a byte string",
}
_BOUNDS = {
    "greater_than": ("gt", "must be greater than"),
    "greater_than_equal": ("ge", "must be at least"),
    "less_than": ("lt", "must be less than"),
    "less_than_equal": ("le", "must be at most"),
}


def _reason(error: ErrorDetails, ctx: Mapping[str, Any]) -> str:
    kind = error["type"]
    if kind == "string_type" and isinstance(error.get("input"), int | float | bool):
        # Kubernetes stores these as strings: an unquoted 21.5 or true in YAML is a number or boolean.
        return "is not a string (write it in quotes)"
    if kind in _REASONS:
        return _REASONS[kind]
    if kind in ("enum", "literal_error"):
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return "is not one of " + ", ".join(choices)
    if kind in _BOUNDS:
        key, text = _BOUNDS[kind]
        return f"{text} {ctx[key]}"
    if kind in ("string_too_short", "too_short"):
        return "must not be empty" if ctx.get("min_length") == 1 else error["msg"].lower()
    if kind == "value_error":
        # pydantic prefixes our own messages with "Value error, ".
        return error["msg"].removeprefix("Value error, ")
    return error["msg"]


def has_errors(problems: Iterable[Problem]) -> bool:
    """True when any of ``problems`` is an error (not just a warning)."""
    return any(problem.is_error for problem in problems)
