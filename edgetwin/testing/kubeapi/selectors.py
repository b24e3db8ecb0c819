"""Label and field selectors as the Kubernetes API parses and applies them."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from edgetwin.testing.kubeapi.errors import KubeApiError

# Field selectors an apiserver accepts per kind, beyond metadata.name and metadata.namespace
# (from the upstream registries' field-label conversion functions); anything else is a 400 there too.
_EXTRA_FIELDS: dict[str, frozenset[str]] = {
    "Pod": frozenset(
        {
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        }
    ),
    "Node": frozenset({"spec.unschedulable"}),
    "Namespace": frozenset({"status.phase"}),
    "Secret": frozenset({"type"}),
    "Event": frozenset(
        {
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        }
    ),
}
_COMMON_FIELDS = frozenset({"metadata.name", "metadata.namespace"})

_LABEL_TERM = re.compile(
    r"""\s*(?:
        (?P<not>!)\s*(?P<absent>[^\s,!=()]+)
      | (?P<setkey>[^\s,!=()]+)\s+(?P<setop>in|notin)\s*\((?P<values>[^)]*)\)
      | (?P<key>[^\s,!=()]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[^\s,!=()]*))?
    )\s*(?:,|$)""",
    re.VERBOSE,
)


class SelectorError(KubeApiError):
    """A label or field selector that cannot be parsed or uses an unsupported field."""

    def __init__(self, selector: str, reason: str) -> None:
        super().__init__(f"invalid selector {selector!r}: {reason}")
        self.selector = selector
        self.reason = reason


@dataclass(frozen=True)
class LabelSelector:
    """A parsed ``labelSelector``: all its requirements must hold."""

    requirements: tuple[Callable[[Mapping[str, str]], bool], ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        """Parse the query-string form: ``a=b,c!=d,e in (f,g),h notin (i),j,!k``."""
        if not text or not text.strip():
            return cls()
        requirements: list[Callable[[Mapping[str, str]], bool]] = []
        position = 0
        while position < len(text):
            match = _LABEL_TERM.match(text, position)
            if match is None or match.end() == position:
                raise SelectorError(text, f"unexpected text at {text[position:]!r}")
            position = match.end()
            requirements.append(_label_requirement(match))
        return cls(tuple(requirements))

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy every requirement."""
        return all(requirement(labels) for requirement in self.requirements)


def _label_requirement(match: re.Match[str]) -> Callable[[Mapping[str, str]], bool]:
    if match["absent"]:
        absent = match["absent"]
        return lambda labels: absent not in labels
    if match["setkey"]:
        key, values = match["setkey"], frozenset(v.strip() for v in match["values"].split(","))
        if match["setop"] == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    key, op, value = match["key"], match["op"], match["value"] or ""
    if op is None:
        return lambda labels: key in labels
    if op == "!=":
        return lambda labels: labels.get(key) != value
    return lambda labels: labels.get(key) == value


@dataclass(frozen=True)
class FieldSelector:
    """A parsed ``fieldSelector``: ``field=value`` / ``field!=value`` terms, all of which must hold."""

    terms: tuple[tuple[str, bool, str], ...] = ()

    @classmethod
    def parse(cls, text: str | None, kind: str) -> FieldSelector:
        """Parse ``text`` for objects of ``kind``; fields the apiserver does not index are rejected."""
        if not text or not text.strip():
            return cls()
        allowed = _COMMON_FIELDS | _EXTRA_FIELDS.get(kind, frozenset())
        terms: list[tuple[str, bool, str]] = []
        for term in text.split(","):
            match = re.fullmatch(r"\s*([^=!\s]+)\s*(==|=|!=)\s*(\S*)\s*", term)
            if match is None:
                raise SelectorError(text, f"invalid term {term!r}")
            field, op, value = match.groups()
            if field not in allowed:
                raise SelectorError(text, f"field label not supported: {field}")
            terms.append((field, op != "!=", value))
        return cls(tuple(terms))

    def matches(self, obj: Mapping[str, Any]) -> bool:
        """Whether ``obj`` satisfies every term (a missing field compares as the empty string)."""
        return all((_field_value(obj, field) == value) == equal for field, equal, value in self.terms)


def _field_value(obj: Mapping[str, Any], field: str) -> str:
    current: Any = obj
    for part in field.split("."):
        current = current.get(part) if isinstance(current, Mapping) else None
    if current is None:
        return ""
    if isinstance(current, bool):
        return "true" if current else "false"
    return str(current)
