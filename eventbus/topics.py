"""KubeEdge's MQTT topic contract (CONTRACTS.md §1): the one module that builds and parses its topics.

Topic grammar::

    $hw/events/device/<id>/<suffix>         id = <namespace>/<name>, or a legacy <name> (namespace "default")
    $ke/events/device/<id>/data/update      mapper data push
    $hw/events/node/<node>/membership/get   (+ /result) and membership/updated
    $hw/events/upload[/...]                 SYS/dis/upload_records

**The suffix decides.** Device suffixes (``twin/update``, ``twin/update/result``, ``state/update``,
``updated``, ...) are a fixed set in which no suffix is the tail of another. The parser matches the suffix at
the end of the topic; what precedes it is the device id: one segment is a legacy id (namespace ``default``),
two segments are ``<namespace>/<name>``, anything else is unknown. So ``$hw/events/device/a/b/twin/update`` is
device ``a/b``, while a legacy device literally named ``twin`` updating its twin writes
``$hw/events/device/twin/twin/update``: no topic can be read two ways. Replies mirror the request's form:
:meth:`Topic.reply` answers a legacy request on the legacy topic.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from eventbus.errors import TopicError

__all__ = [
    "DEFAULT_NAMESPACE",
    "DEVICE_KINDS",
    "EDGE_REQUEST_KINDS",
    "EDGE_SUBSCRIPTIONS",
    "NODE_KINDS",
    "UPLOAD_FILTER",
    "UPLOAD_RECORDS",
    "Topic",
    "TopicKind",
    "device_filter",
    "device_filters",
    "device_id",
    "device_topic",
    "node_filter",
    "node_topic",
    "parse_topic",
    "split_device_id",
]

DEFAULT_NAMESPACE: Final = "default"
"""The namespace of a device addressed with the legacy one-segment id."""

_DEVICE_PREFIX: Final = "$hw/events/device/"
_DATA_PREFIX: Final = "$ke/events/device/"
_NODE_PREFIX: Final = "$hw/events/node/"
_UPLOAD_ROOT: Final = "$hw/events/upload"

UPLOAD_FILTER: Final = _UPLOAD_ROOT + "/#"
"""Filter of the upload topics the edge forwards to the cloud as they are."""

UPLOAD_RECORDS: Final = "SYS/dis/upload_records"
"""The upload-records topic the edge forwards to the cloud as it is."""


class TopicKind(enum.Enum):
    """What a topic is for; the value is a stable snake_case name, usable as a metrics label."""

    TWIN_UPDATE = "twin_update"
    TWIN_UPDATE_RESULT = "twin_update_result"
    TWIN_UPDATE_DELTA = "twin_update_delta"
    TWIN_UPDATE_DOCUMENT = "twin_update_document"
    TWIN_GET = "twin_get"
    TWIN_GET_RESULT = "twin_get_result"
    STATE_UPDATE = "state_update"
    STATE_UPDATE_RESULT = "state_update_result"
    DEVICE_UPDATED = "device_updated"
    DATA_UPDATE = "data_update"
    MEMBERSHIP_GET = "membership_get"
    MEMBERSHIP_GET_RESULT = "membership_get_result"
    MEMBERSHIP_UPDATED = "membership_updated"
    UPLOAD = "upload"
    UPLOAD_RECORDS = "upload_records"
    UNKNOWN = "unknown"
    """Under ``$hw/events`` or ``$ke/events`` but not part of the contract (counted, never answered)."""


# Suffix segments after the device id; the set is tail-free (see the module docstring), a unit test checks it.
_DEVICE_SUFFIXES: Final[dict[TopicKind, tuple[str, ...]]] = {
    TopicKind.TWIN_UPDATE: ("twin", "update"),
    TopicKind.TWIN_UPDATE_RESULT: ("twin", "update", "result"),
    TopicKind.TWIN_UPDATE_DELTA: ("twin", "update", "delta"),
    TopicKind.TWIN_UPDATE_DOCUMENT: ("twin", "update", "document"),
    TopicKind.TWIN_GET: ("twin", "get"),
    TopicKind.TWIN_GET_RESULT: ("twin", "get", "result"),
    TopicKind.STATE_UPDATE: ("state", "update"),
    TopicKind.STATE_UPDATE_RESULT: ("state", "update", "result"),
    TopicKind.DEVICE_UPDATED: ("updated",),
}
_DATA_SUFFIX: Final = ("data", "update")
_NODE_SUFFIXES: Final[dict[TopicKind, tuple[str, ...]]] = {
    TopicKind.MEMBERSHIP_GET: ("membership", "get"),
    TopicKind.MEMBERSHIP_GET_RESULT: ("membership", "get", "result"),
    TopicKind.MEMBERSHIP_UPDATED: ("membership", "updated"),
}
_DEVICE_BY_SUFFIX: Final = {suffix: kind for kind, suffix in _DEVICE_SUFFIXES.items()}
_NODE_BY_SUFFIX: Final = {suffix: kind for kind, suffix in _NODE_SUFFIXES.items()}
_DATA_BY_SUFFIX: Final[dict[tuple[str, ...], TopicKind]] = {_DATA_SUFFIX: TopicKind.DATA_UPDATE}

DEVICE_KINDS: Final = frozenset((*_DEVICE_SUFFIXES, TopicKind.DATA_UPDATE))
"""Kinds whose topic names a device (``namespace``/``name`` set on the parsed :class:`Topic`)."""

NODE_KINDS: Final = frozenset(_NODE_SUFFIXES)
"""Kinds whose topic names an edge node (``node`` set on the parsed :class:`Topic`)."""

EDGE_REQUEST_KINDS: Final = (TopicKind.TWIN_UPDATE, TopicKind.TWIN_GET, TopicKind.STATE_UPDATE)
"""Device topics the edge answers (mappers and apps publish them)."""


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed topic: its kind, the device (namespace, name) or node it names, and its id form."""

    kind: TopicKind
    topic: str
    namespace: str | None = None
    name: str | None = None
    node: str | None = None
    legacy: bool = False

    @property
    def device_id(self) -> str | None:
        """``<namespace>/<name>`` for a device topic (also for a legacy one), else None."""
        if self.namespace is None or self.name is None:
            return None
        return f"{self.namespace}/{self.name}"

    def reply(self, kind: TopicKind) -> str:
        """The topic of ``kind`` for the same device or node, in the same form (legacy stays legacy)."""
        if self.namespace is not None and self.name is not None and kind in DEVICE_KINDS:
            return device_topic(kind, self.namespace, self.name, legacy=self.legacy)
        if self.node is not None and kind in NODE_KINDS:
            return node_topic(kind, self.node)
        raise TopicError("kind", kind.value, f"no {kind.value} topic answers {self.topic!r}")


def _check_segment(field: str, value: str) -> str:
    if not value:
        raise TopicError(field, value, "must not be empty")
    for char in ("/", "+", "#", "\x00"):
        if char in value:
            raise TopicError(field, value, f"must not contain {char!r}")
    return value


def device_id(namespace: str, name: str) -> str:
    """The device id ``<namespace>/<name>`` used in topics, the twin store and cloud resources."""
    return f"{_check_segment('namespace', namespace)}/{_check_segment('device name', name)}"


def split_device_id(value: str) -> tuple[str, str]:
    """Split ``<namespace>/<name>`` (or a legacy ``<name>``, namespace ``default``) into (namespace, name)."""
    namespace, sep, name = value.partition("/")
    if not sep:
        return DEFAULT_NAMESPACE, _check_segment("device name", value)
    return _check_segment("namespace", namespace), _check_segment("device name", name)


def _device_suffix(kind: TopicKind) -> tuple[str, str]:
    """(prefix, suffix) of a device kind."""
    if kind is TopicKind.DATA_UPDATE:
        return _DATA_PREFIX, "/".join(_DATA_SUFFIX)
    suffix = _DEVICE_SUFFIXES.get(kind)
    if suffix is None:
        raise TopicError("kind", kind.value, "is not a device topic kind")
    return _DEVICE_PREFIX, "/".join(suffix)


def device_topic(kind: TopicKind, namespace: str, name: str, *, legacy: bool = False) -> str:
    """The topic of ``kind`` for device ``namespace/name``.

    ``legacy=True`` builds the one-segment form ``$hw/events/device/<name>/...``, which can only name a
    device in the ``default`` namespace.
    """
    prefix, suffix = _device_suffix(kind)
    _check_segment("device name", name)
    if legacy:
        if namespace != DEFAULT_NAMESPACE:
            raise TopicError("namespace", namespace, f"the legacy topic form implies {DEFAULT_NAMESPACE!r}")
        return f"{prefix}{name}/{suffix}"
    return f"{prefix}{_check_segment('namespace', namespace)}/{name}/{suffix}"


def node_topic(kind: TopicKind, node: str) -> str:
    """The topic of node ``kind`` (membership get / get result / updated) for edge node ``node``."""
    suffix = _NODE_SUFFIXES.get(kind)
    if suffix is None:
        raise TopicError("kind", kind.value, "is not a node topic kind")
    return f"{_NODE_PREFIX}{_check_segment('node name', node)}/{'/'.join(suffix)}"


def device_filter(kind: TopicKind, *, legacy: bool = False) -> str:
    """Subscription filter matching ``kind`` for every device, in the namespaced (or the legacy) form."""
    prefix, suffix = _device_suffix(kind)
    return f"{prefix}+/{suffix}" if legacy else f"{prefix}+/+/{suffix}"


def device_filters(kind: TopicKind) -> tuple[str, str]:
    """Both filters (namespaced, legacy) matching ``kind`` for every device."""
    return device_filter(kind), device_filter(kind, legacy=True)


def node_filter(kind: TopicKind, node: str = "+") -> str:
    """Subscription filter for node ``kind``, for one node or (default) every node."""
    suffix = _NODE_SUFFIXES.get(kind)
    if suffix is None:
        raise TopicError("kind", kind.value, "is not a node topic kind")
    if node != "+":
        _check_segment("node name", node)
    return f"{_NODE_PREFIX}{node}/{'/'.join(suffix)}"


EDGE_SUBSCRIPTIONS: Final = (
    *(topic_filter for kind in EDGE_REQUEST_KINDS for topic_filter in device_filters(kind)),
    node_filter(TopicKind.MEMBERSHIP_GET),
    UPLOAD_FILTER,
    UPLOAD_RECORDS,
)
"""Every filter the edge subscribes to: device requests in both id forms, membership requests, uploads."""


def _parse_device(topic: str, segments: list[str], by_suffix: dict[tuple[str, ...], TopicKind]) -> Topic:
    # segments: what follows the device prefix; the longest suffix is three segments.
    for length in (3, 2, 1):
        kind = by_suffix.get(tuple(segments[-length:])) if len(segments) > length else None
        if kind is None:
            continue
        ident = segments[:-length]
        if "" in ident:
            break
        if len(ident) == 1:
            return Topic(kind, topic, namespace=DEFAULT_NAMESPACE, name=ident[0], legacy=True)
        if len(ident) == 2:
            return Topic(kind, topic, namespace=ident[0], name=ident[1])
        break
    return Topic(TopicKind.UNKNOWN, topic)


def parse_topic(topic: str) -> Topic | None:
    """Parse a received topic.

    Returns None for a topic outside the contract's roots (``$hw/events``, ``$ke/events``,
    ``SYS/dis/upload_records``), a :class:`Topic` of kind ``UNKNOWN`` for an unrecognised topic inside them
    (so the caller can count it), else the parsed topic.
    """
    if topic.startswith(_DEVICE_PREFIX):
        return _parse_device(topic, topic[len(_DEVICE_PREFIX) :].split("/"), _DEVICE_BY_SUFFIX)
    if topic.startswith(_NODE_PREFIX):
        node, _, rest = topic[len(_NODE_PREFIX) :].partition("/")
        kind = _NODE_BY_SUFFIX.get(tuple(rest.split("/")))
        if kind is None or not node:
            return Topic(TopicKind.UNKNOWN, topic)
        return Topic(kind, topic, node=node)
    if topic == _UPLOAD_ROOT or topic.startswith(_UPLOAD_ROOT + "/"):
        return Topic(TopicKind.UPLOAD, topic)
    if topic == UPLOAD_RECORDS:
        return Topic(TopicKind.UPLOAD_RECORDS, topic)
    if topic.startswith(_DATA_PREFIX):
        return _parse_device(topic, topic[len(_DATA_PREFIX) :].split("/"), _DATA_BY_SUFFIX)
    if topic.startswith(("$hw/events/", "$ke/events/")):
        return Topic(TopicKind.UNKNOWN, topic)
    return None
