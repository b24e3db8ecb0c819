"""The beehive message model of the edge-cloud link (CONTRACTS.md §3): header, route, content.

One frame of the link is one JSON message, spelled as KubeEdge spells it (``msg_id``, ``parent_msg_id``,
``resourceversion``; empty optional header fields omitted, like Go's ``omitempty``), so a frame written by
KubeEdge parses here and the other way round. :func:`decode` is the only way a frame enters: whatever it
refuses raises :class:`~cloudsync.errors.MessageFormatError` naming the wrong part, and the session that
read it drops the frame and carries on.

Resources name what a message is about. On the wire to an edge node they are ``<ns>/<type>/<name>``
(objects), ``node`` (keepalive) or ``device/<ns>/<name>/...`` (twins); inside the cloud an object resource
is prefixed with ``node/<node>/`` (:func:`with_node` / :func:`strip_node`).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cloudsync.errors import MessageFormatError

__all__ = [
    "MAX_FRAME",
    "Group",
    "Header",
    "Message",
    "ObjectRef",
    "Operation",
    "ResourceType",
    "Route",
    "decode",
    "encode",
    "resource_type",
    "strip_node",
    "with_node",
]

# Larger frames are refused before parsing: the biggest objects that travel (a Secret or ConfigMap) are capped
# at 1 MiB by Kubernetes; the rest is room for the JSON around them.
MAX_FRAME = 4 * 1024 * 1024


class Operation(StrEnum):
    """What a message asks for (KubeEdge's beehive operations)."""

    INSERT = "insert"
    UPDATE = "update"
    PATCH = "patch"
    DELETE = "delete"
    QUERY = "query"
    RESPONSE = "response"
    UPLOAD = "upload"
    KEEPALIVE = "keepalive"


class Group(StrEnum):
    """Which module group handles a message at the other end (``route.group``)."""

    RESOURCE = "resource"
    TWIN = "twin"
    USER = "user"
    META = "meta"
    HUB = "hub"


class ResourceType(StrEnum):
    """The object types a resource string can name (CONTRACTS.md §3)."""

    POD = "pod"
    POD_STATUS = "podstatus"
    CONFIGMAP = "configmap"
    SECRET = "secret"
    SERVICE = "service"
    ENDPOINTS = "endpoints"
    NODE = "node"
    NODE_STATUS = "nodestatus"
    LEASE = "lease"
    DEVICE = "device"
    DEVICE_MODEL = "devicemodel"
    MEMBERSHIP = "membership"
    TWIN = "twin"


class _Wire(BaseModel):
    model_config = ConfigDict(
        strict=True, frozen=True, extra="ignore", validate_by_name=True, validate_by_alias=True
    )


class Header(_Wire):
    """``header``: identity, causality and ordering of a message."""

    msg_id: str = Field(min_length=1, max_length=128)
    parent_msg_id: str = Field("", max_length=128)
    timestamp: int = Field(ge=0)
    resource_version: str = Field("", alias="resourceversion", max_length=64)
    sync: bool = False


class Route(_Wire):
    """``route``: who sent the message, to which group, what to do with which resource."""

    source: str = Field(min_length=1, max_length=64)
    group: str = Field(min_length=1, max_length=64)
    operation: Operation
    resource: str = Field(max_length=512)


class Message(_Wire):
    """One beehive message. Build new ones with :meth:`new`; answers with :meth:`response`."""

    header: Header
    route: Route
    content: Any = None

    @classmethod
    def new(
        cls,
        *,
        source: str,
        group: str,
        operation: Operation,
        resource: str,
        content: Any = None,
        resource_version: str = "",
        parent_msg_id: str = "",
        sync: bool = False,
    ) -> Self:
        """A message with a fresh ``msg_id`` and the current time in milliseconds."""
        return cls(
            header=Header(
                msg_id=str(uuid.uuid4()),
                parent_msg_id=parent_msg_id,
                timestamp=time.time_ns() // 1_000_000,
                resource_version=resource_version,
                sync=sync,
            ),
            route=Route(source=source, group=group, operation=operation, resource=resource),
            content=content,
        )

    @property
    def msg_id(self) -> str:
        """The message's id."""
        return self.header.msg_id

    @property
    def operation(self) -> Operation:
        """The message's operation."""
        return self.route.operation

    @property
    def resource(self) -> str:
        """The message's resource string."""
        return self.route.resource

    def response(self, *, source: str, content: Any = "OK") -> Message:
        """The acknowledgement of this message: operation ``response``, ``parent_msg_id`` = this id."""
        return Message.new(
            source=source,
            group=self.route.group,
            operation=Operation.RESPONSE,
            resource=self.route.resource,
            content=content,
            parent_msg_id=self.header.msg_id,
            resource_version=self.header.resource_version,
        )

    def with_resource(self, resource: str) -> Message:
        """The same message (same id) about another resource string: used to add or strip a node prefix."""
        return self.model_copy(update={"route": self.route.model_copy(update={"resource": resource})})


def encode(message: Message) -> str:
    """The JSON frame of ``message``; empty optional header fields are left out, as KubeEdge does."""
    header: dict[str, Any] = {"msg_id": message.header.msg_id}
    if message.header.parent_msg_id:
        header["parent_msg_id"] = message.header.parent_msg_id
    header["timestamp"] = message.header.timestamp
    if message.header.resource_version:
        header["resourceversion"] = message.header.resource_version
    if message.header.sync:
        header["sync"] = True
    route = message.route
    frame = {
        "header": header,
        "route": {
            "source": route.source,
            "group": route.group,
            "operation": route.operation.value,
            "resource": route.resource,
        },
        "content": message.content,
    }
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def decode(frame: str | bytes) -> Message:
    """Parse one frame; raises :class:`MessageFormatError` saying what is wrong (never anything else)."""
    if len(frame) > MAX_FRAME:
        raise MessageFormatError(f"frame of {len(frame)} bytes is larger than {MAX_FRAME}")
    try:
        return Message.model_validate_json(frame)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "message"
        raise MessageFormatError(f"{where}: {first['msg']}") from exc


@dataclass(frozen=True)
class ObjectRef:
    """An object resource ``<ns>/<type>/<name>``; cluster-scoped objects (nodes) have an empty namespace."""

    namespace: str
    type: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.type}/{self.name}"

    @classmethod
    def parse(cls, resource: str) -> Self:
        """Read ``<ns>/<type>/<name>``; raises :class:`MessageFormatError` for another shape."""
        parts = resource.split("/")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise MessageFormatError(f"resource {resource!r} is not <namespace>/<type>/<name>")
        return cls(*parts)


def resource_type(resource: str) -> str | None:
    """The type of an object resource ``<ns>/<type>/<name>``; ``None`` for any other resource string."""
    parts = resource.split("/")
    return parts[1] if len(parts) == 3 and parts[1] and parts[2] else None


def with_node(node: str, resource: str) -> str:
    """The cloud-side resource ``node/<node>/<resource>``."""
    return f"node/{node}/{resource}"


def strip_node(resource: str) -> tuple[str, str]:
    """Split a cloud-side ``node/<node>/<rest>`` into ``(node, rest)``; raises :class:`MessageFormatError`."""
    prefix, _, rest = resource.partition("/")
    node, _, tail = rest.partition("/")
    if prefix != "node" or not node or not tail:
        raise MessageFormatError(f"resource {resource!r} does not start with node/<node>/")
    return node, tail
