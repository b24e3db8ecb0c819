"""The EdgeController's messages with edge nodes (CONTRACTS.md §3), built and read in one place.

Cloud -> edge, group ``resource``, source ``edgecontroller``: ``<ns>/<type>/<name>`` for types ``pod``,
``configmap``, ``secret``, ``service`` and ``endpoints``, operation insert / update / delete, content the
object as the API's JSON (with ``apiVersion`` and ``kind``, without ``managedFields``), header
``resourceversion`` set (the link delivers it reliably). A delete carries the object's identity only
(``apiVersion``, ``kind``, ``metadata.name`` / ``namespace`` / ``uid``).

Edge -> cloud (what Edged sends):

- ``<ns>/podstatus/<name>``, operation ``update``: content KubeEdge's ``PodStatusRequest``,
  ``{"UID": "<pod uid>", "Name": "<pod name>", "Status": <v1 PodStatus>}`` (the lower-case keys ``uid``,
  ``name``, ``status`` are read too). The status replaces the Pod's (lists such as ``conditions`` and
  ``containerStatuses`` whole; ``startTime`` once set is kept);
- ``<ns>/pod/<name>``, operation ``delete``: the pod's containers are gone after a graceful deletion; the
  content may be ``{"metadata": {"uid": ...}}`` or empty.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from cloudcore.errors import PodMessageError
from cloudsync import Group, Message, MessageFormatError, ObjectRef, Operation, ResourceType

__all__ = [
    "KINDS",
    "SOURCE",
    "PodStatusReport",
    "delete_message",
    "fingerprint",
    "identity",
    "is_pod_resource",
    "object_message",
    "read_pod_status",
    "resource_of",
]

#: ``route.source`` of every message the EdgeController sends.
SOURCE: Final = "edgecontroller"
#: The types the EdgeController sends, with their ``kind``.
KINDS: Final = {
    ResourceType.POD: "Pod",
    ResourceType.CONFIGMAP: "ConfigMap",
    ResourceType.SECRET: "Secret",
    ResourceType.SERVICE: "Service",
    ResourceType.ENDPOINTS: "Endpoints",
}
_UPSTREAM_TYPES: Final = frozenset({ResourceType.POD.value, ResourceType.POD_STATUS.value})
# Server-kept fields the edge has no use for: they only make every message larger.
_DROPPED_METADATA: Final = ("managedFields",)

JsonObject = dict[str, Any]


class PodStatusReport(BaseModel):
    """The content of a ``podstatus`` message: KubeEdge's ``PodStatusRequest``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    uid: str = Field("", validation_alias=AliasChoices("UID", "uid"))
    name: str = Field("", validation_alias=AliasChoices("Name", "name"))
    status: dict[str, Any] = Field(validation_alias=AliasChoices("Status", "status"))


def is_pod_resource(resource: str) -> bool:
    """Whether an edge->cloud resource is the EdgeController's (``<ns>/pod/<name>``, ``<ns>/podstatus/...``).

    The composition routes such messages to :meth:`EdgeController.received`.
    """
    try:
        return ObjectRef.parse(resource).type in _UPSTREAM_TYPES
    except MessageFormatError:
        return False


def resource_of(kind: ResourceType, obj: Mapping[str, Any]) -> str:
    """The wire resource ``<ns>/<type>/<name>`` of ``obj``."""
    metadata = obj["metadata"]
    return f"{metadata.get('namespace', '')}/{kind.value}/{metadata['name']}"


def identity(kind: ResourceType, obj: Mapping[str, Any]) -> JsonObject:
    """What a delete carries: ``apiVersion``, ``kind`` and the object's name, namespace and uid."""
    metadata = obj["metadata"]
    kept = {key: metadata[key] for key in ("name", "namespace", "uid") if key in metadata}
    return {"apiVersion": "v1", "kind": KINDS[kind], "metadata": kept}


def object_message(operation: Operation, kind: ResourceType, obj: Mapping[str, Any], version: str) -> Message:
    """An insert or update of ``obj`` for an edge node, versioned ``version``."""
    metadata = {key: value for key, value in obj["metadata"].items() if key not in _DROPPED_METADATA}
    content = {**obj, "apiVersion": "v1", "kind": KINDS[kind], "metadata": metadata}
    return _message(operation, resource_of(kind, obj), content, version)


def delete_message(kind: ResourceType, obj: Mapping[str, Any], version: str = "") -> Message:
    """A delete of ``obj`` for an edge node; without ``version`` it is best effort."""
    return _message(Operation.DELETE, resource_of(kind, obj), identity(kind, obj), version)


def _message(operation: Operation, resource: str, content: JsonObject, version: str) -> Message:
    return Message.new(
        source=SOURCE,
        group=Group.RESOURCE,
        operation=operation,
        resource=resource,
        content=content,
        resource_version=version,
    )


def fingerprint(kind: ResourceType, obj: Mapping[str, Any]) -> str:
    """A digest of what the edge acts on: a change of anything else is not sent.

    A Pod's status is left out: the edge writes it (through the controller's patches), so sending it back
    would echo every status report.
    """
    metadata = {
        key: value
        for key, value in obj["metadata"].items()
        if key not in (*_DROPPED_METADATA, "resourceVersion")
    }
    content = {key: value for key, value in obj.items() if key not in ("metadata", "apiVersion", "kind")}
    if kind is ResourceType.POD:
        content.pop("status", None)
    text = json.dumps([metadata, content], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def read_pod_status(message: Message) -> PodStatusReport:
    """Read the content of a ``podstatus`` message; raises :class:`PodMessageError` saying what is wrong."""
    try:
        return PodStatusReport.model_validate(message.content)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "content"
        raise PodMessageError(message.resource, f"{where}: {first['msg']}") from exc
