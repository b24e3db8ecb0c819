"""The emulator's state: objects under the apiserver's metadata rules, a resourceVersion counter, watches."""

from __future__ import annotations

import asyncio
import collections
import copy
import datetime
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import kmock

from edgetwin.testing.kubeapi.errors import KubeApiError

JsonObject = dict[str, Any]
# Fields of metadata that only the server sets; writes from clients never change them.
_SERVER_OWNED = ("uid", "creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds")
# How often an idle watch checks that its client is still connected.
_WATCH_POLL = 5.0


@dataclass(frozen=True)
class ResourceType:
    """What the store needs to know about a resource to apply the apiserver's rules to its objects."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    status_subresource: bool
    custom: bool = False

    @property
    def api_version(self) -> str:
        """``group/version``, or ``version`` for the core group."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        """``plural.group`` as the apiserver names the resource in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def key(self) -> kmock.resource:
        """The resource as kmock indexes objects by it."""
        return kmock.resource(self.group, self.version, self.plural)


class ApiStatusError(KubeApiError):
    """A request the emulated apiserver refuses; rendered as a ``Status`` with ``code`` and ``reason``."""

    def __init__(
        self, code: int, reason: str, message: str, rtype: ResourceType | None = None, name: str | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details: JsonObject = {}
        if rtype is not None:
            self.details = {"group": rtype.group, "kind": rtype.plural}
            if name is not None:
                self.details["name"] = name

    def status(self) -> JsonObject:
        """The ``v1`` Status body of this error."""
        body: JsonObject = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def not_found(rtype: ResourceType, name: str) -> ApiStatusError:
    """The 404 of a missing object."""
    return ApiStatusError(404, "NotFound", f'{rtype.group_resource} "{name}" not found', rtype, name)


def conflict(rtype: ResourceType, name: str) -> ApiStatusError:
    """The 409 of a write based on a stale resourceVersion."""
    message = (
        f'Operation cannot be fulfilled on {rtype.group_resource} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    return ApiStatusError(409, "Conflict", message, rtype, name)


def _timestamp(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _now() -> str:
    return _timestamp(datetime.datetime.now(datetime.UTC))


@dataclass(frozen=True)
class WatchEvent:
    """One change: ``type`` is ADDED, MODIFIED or DELETED; ``previous`` is the state before a modification."""

    resource_version: int
    type: str
    rtype: ResourceType
    namespace: str | None
    obj: JsonObject
    previous: JsonObject | None = None


NAMESPACES = ResourceType("", "v1", "namespaces", "Namespace", namespaced=False, status_subresource=True)


class ObjectStore:
    """Objects of every resource, kept in kmock's :class:`kmock.ObjectsArray` (with a short history each).

    All mutating methods are synchronous, hence atomic on the event loop; watches wait for the log to grow.
    """

    def __init__(self, objects: kmock.ObjectsArray, history: int = 8, event_log_size: int = 10_000) -> None:
        self._objects = objects
        self._history = history
        self._log: collections.deque[WatchEvent] = collections.deque(maxlen=event_log_size)
        self._evicted = 0  # the newest resourceVersion no longer in the log
        self._resource_version = 0
        self._changed = asyncio.Event()
        self._closed = False

    @property
    def resource_version(self) -> int:
        """The resourceVersion of the latest change."""
        return self._resource_version

    # -- reading ---------------------------------------------------------------------------------------------

    def get(self, rtype: ResourceType, namespace: str | None, name: str) -> JsonObject:
        """The current state of one object, or a 404."""
        key = (rtype.key, namespace if rtype.namespaced else None, name)
        if key not in self._objects or self._objects[key].deleted:
            raise not_found(rtype, name)
        return self._objects[key].raw

    def list_objects(self, rtype: ResourceType, namespace: str | None) -> list[JsonObject]:
        """The objects of ``rtype`` in ``namespace`` (all namespaces if ``None``), in etcd's key order."""
        found = [
            (ns or "", name, obj.raw)
            for (resource, ns, name), obj in self._objects.items()
            if resource == rtype.key and not obj.deleted and (namespace is None or ns == namespace)
        ]
        return [raw for _, _, raw in sorted(found, key=lambda item: (item[0], item[1]))]

    # -- writing ---------------------------------------------------------------------------------------------

    def create(self, rtype: ResourceType, namespace: str | None, body: Mapping[str, Any]) -> JsonObject:
        """Store a new object; the server fills uid, resourceVersion, creationTimestamp and generation."""
        obj = copy.deepcopy(dict(body))
        meta = obj.setdefault("metadata", {})
        name = meta.get("name") or (meta.get("generateName") and meta["generateName"] + uuid.uuid4().hex[:5])
        if not name:
            raise ApiStatusError(
                422, "Invalid", "metadata.name: Required value: name or generateName is required", rtype
            )
        if rtype.namespaced:
            if (meta.get("namespace") or namespace) != namespace:
                raise ApiStatusError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            self._check_namespace_accepts(namespace or "")
        key = (rtype.key, namespace if rtype.namespaced else None, name)
        if key in self._objects and not self._objects[key].deleted:
            raise ApiStatusError(
                409, "AlreadyExists", f'{rtype.group_resource} "{name}" already exists', rtype, name
            )
        for field in (*_SERVER_OWNED, "resourceVersion", "namespace"):
            meta.pop(field, None)
        meta["name"] = name
        if rtype.namespaced:
            meta["namespace"] = namespace
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
        _server_defaults(rtype, obj)
        meta["resourceVersion"] = str(self._bump())
        self._objects[key] = obj
        self._record("ADDED", rtype, key[1], obj)
        return obj

    def update(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        proposed: Mapping[str, Any],
        subresource: str | None,
    ) -> JsonObject:
        """Replace an object with ``proposed`` under the apiserver's rules.

        A non-empty ``metadata.resourceVersion`` in ``proposed`` must be the current one (else 409). With a
        status subresource, writes to the object keep its status and writes to ``status`` change nothing else.
        A write that changes nothing is not a change: no new resourceVersion, no watch event.
        """
        old = self.get(rtype, namespace, name)
        new = copy.deepcopy(dict(proposed))
        meta = new.setdefault("metadata", {})
        if meta.get("resourceVersion") and meta["resourceVersion"] != old["metadata"]["resourceVersion"]:
            raise conflict(rtype, name)
        if subresource == "status":
            new = {**copy.deepcopy(old), "status": new.get("status")}
            if new["status"] is None:
                del new["status"]
        elif rtype.status_subresource:
            new.pop("status", None)
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
        meta = new.setdefault("metadata", {})
        for field in (*_SERVER_OWNED, "name", "namespace", "resourceVersion"):
            meta.pop(field, None)
            if field in old["metadata"]:
                meta[field] = old["metadata"][field]
        new["apiVersion"], new["kind"] = rtype.api_version, rtype.kind
        if new == old:
            return old
        if _without_unversioned(old, rtype) != _without_unversioned(new, rtype):
            meta["generation"] = int(old["metadata"].get("generation", 0)) + 1
        meta["resourceVersion"] = str(self._bump())
        key = (rtype.key, namespace if rtype.namespaced else None, name)
        # As in the apiserver, an update completes a deletion once nothing holds it: no finalizer, no grace.
        if (
            meta.get("deletionTimestamp")
            and not meta.get("deletionGracePeriodSeconds")
            and not _finalizers(rtype, new)
        ):
            del self._objects[key]
            self._record("DELETED", rtype, key[1], new)
        else:
            self._keep(key, new)
            self._record("MODIFIED", rtype, key[1], new, previous=old)
        return new

    def delete(
        self, rtype: ResourceType, namespace: str | None, name: str, options: Mapping[str, Any]
    ) -> JsonObject:
        """Delete an object, or mark it (``deletionTimestamp``) and keep it; return its last state.

        ``options`` is a DeleteOptions (``preconditions``, ``gracePeriodSeconds``). An object stays while
        finalizers remain, and a Pod bound to a node stays for its grace period, until deleted again with
        ``gracePeriodSeconds=0`` as a kubelet does once its containers are gone.
        """
        old = self.get(rtype, namespace, name)
        meta = old["metadata"]
        for field in ("uid", "resourceVersion"):
            if (options.get("preconditions") or {}).get(field) not in (None, meta[field]):
                raise conflict(rtype, name)
        grace = _grace_period(rtype, old, options.get("gracePeriodSeconds"))
        key = (rtype.key, namespace if rtype.namespaced else None, name)
        if grace == 0 and not _finalizers(rtype, old):
            gone = copy.deepcopy(old)
            gone["metadata"]["resourceVersion"] = str(self._bump())
            del self._objects[key]
            self._record("DELETED", rtype, key[1], gone)
            return gone
        if meta.get("deletionTimestamp") and grace >= int(meta.get("deletionGracePeriodSeconds", 0)):
            return old
        marked = copy.deepcopy(old)
        deadline = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=grace)
        marked["metadata"].update(deletionTimestamp=_timestamp(deadline), deletionGracePeriodSeconds=grace)
        if rtype == NAMESPACES:
            marked.setdefault("status", {})["phase"] = "Terminating"
        marked["metadata"]["resourceVersion"] = str(self._bump())
        self._keep(key, marked)
        self._record("MODIFIED", rtype, key[1], marked, previous=old)
        return marked

    def purge(self, rtype: ResourceType) -> None:
        """Delete every object of ``rtype`` regardless of finalizers, as deleting its CRD does."""
        for obj in self.list_objects(rtype, None):
            key = (rtype.key, obj["metadata"].get("namespace"), obj["metadata"]["name"])
            gone = copy.deepcopy(obj)
            gone["metadata"]["resourceVersion"] = str(self._bump())
            del self._objects[key]
            self._record("DELETED", rtype, key[1], gone)

    # -- watching --------------------------------------------------------------------------------------------

    async def watch(
        self,
        rtype: ResourceType,
        namespace: str | None,
        since: int | None,
        matches: Callable[[JsonObject], bool],
        timeout: float | None = None,
        abandoned: Callable[[], bool] = lambda: False,
    ) -> AsyncGenerator[tuple[str, JsonObject], None]:
        """Yield ``(type, object)`` changes of ``rtype`` after resourceVersion ``since``.

        Without ``since``, the current objects come first as ADDED. An object starting or ceasing to match
        the selector ``matches`` is ADDED or DELETED for this watch. Ends after ``timeout`` seconds, when the
        store closes, or when ``abandoned()`` (checked every few seconds) says the client has gone. Raises a
        410 :class:`ApiStatusError` when ``since`` is older than the log keeps.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if since is None:
            cursor = self._resource_version
            for obj in self.list_objects(rtype, namespace):
                if matches(obj):
                    yield "ADDED", obj
        else:
            cursor = since
        while not self._closed and not abandoned():
            changed = self._changed
            if cursor < self._evicted:
                raise ApiStatusError(
                    410, "Expired", f"too old resource version: {cursor} ({self._evicted + 1})"
                )
            for event in self._events_after(cursor):
                cursor = event.resource_version
                if event.rtype.key == rtype.key and (namespace is None or event.namespace == namespace):
                    seen = _as_seen(event, matches)
                    if seen is not None:
                        yield seen
            remaining = _WATCH_POLL if deadline is None else min(_WATCH_POLL, deadline - time.monotonic())
            if remaining <= 0:
                return
            if changed is self._changed:
                try:
                    await asyncio.wait_for(changed.wait(), remaining)
                except TimeoutError:
                    continue

    def close(self) -> None:
        """End every watch; the store stays readable."""
        self._closed = True
        self._changed.set()

    # -- internals -------------------------------------------------------------------------------------------

    def _keep(self, key: tuple[kmock.resource, str | None, str], obj: JsonObject) -> None:
        """Make ``obj`` the object's current version, keeping a few earlier ones for assertions."""
        self._objects[key].history.append(obj)
        del self._objects[key].history[: -self._history]

    def _bump(self) -> int:
        self._resource_version += 1
        return self._resource_version

    def _events_after(self, cursor: int) -> list[WatchEvent]:
        # Newest first and stop early: a watch only ever needs the few events since it last looked.
        newer: list[WatchEvent] = []
        for event in reversed(self._log):
            if event.resource_version <= cursor:
                break
            newer.append(event)
        newer.reverse()
        return newer

    def _record(
        self,
        type_: str,
        rtype: ResourceType,
        namespace: str | None,
        obj: JsonObject,
        previous: JsonObject | None = None,
    ) -> None:
        if len(self._log) == self._log.maxlen:
            self._evicted = self._log[0].resource_version
        self._log.append(
            WatchEvent(int(obj["metadata"]["resourceVersion"]), type_, rtype, namespace, obj, previous)
        )
        self._changed.set()
        self._changed = asyncio.Event()

    def _check_namespace_accepts(self, namespace: str) -> None:
        try:
            ns = self.get(NAMESPACES, None, namespace)
        except ApiStatusError:
            raise ApiStatusError(
                404, "NotFound", f'namespaces "{namespace}" not found', NAMESPACES, namespace
            ) from None
        if ns["metadata"].get("deletionTimestamp"):
            raise ApiStatusError(
                403,
                "Forbidden",
                f"unable to create new content in namespace {namespace} because it is being terminated",
            )


def _server_defaults(rtype: ResourceType, obj: JsonObject) -> None:
    """What the apiserver's create strategies set: a CR's status only ever comes from /status, and so on."""
    if rtype.custom and rtype.status_subresource:
        obj.pop("status", None)
    elif rtype == NAMESPACES:
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        obj["status"] = {"phase": "Active"}
    elif rtype.kind == "Pod" and rtype.group == "":
        obj["status"] = {"phase": "Pending"}


def _finalizers(rtype: ResourceType, obj: JsonObject) -> list[Any]:
    found: list[Any] = list(obj["metadata"].get("finalizers") or [])
    if rtype == NAMESPACES:
        found += obj.get("spec", {}).get("finalizers") or []
    return found


def _grace_period(rtype: ResourceType, obj: JsonObject, requested: Any) -> int:
    """Seconds a deleted object lingers: only Pods bound to a node and still running get any."""
    if rtype.group or rtype.kind != "Pod":
        return 0
    spec = obj.get("spec") or {}
    if not spec.get("nodeName") or (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return 0
    grace = requested if requested is not None else spec.get("terminationGracePeriodSeconds", 30)
    return max(int(grace), 0)


def _without_unversioned(obj: JsonObject, rtype: ResourceType) -> JsonObject:
    """The part of an object whose changes bump ``metadata.generation``."""
    skipped = {"metadata", "status"} if rtype.status_subresource else {"metadata"}
    return {key: value for key, value in obj.items() if key not in skipped}


def _as_seen(event: WatchEvent, matches: Callable[[JsonObject], bool]) -> tuple[str, JsonObject] | None:
    """The event as a watch with selector ``matches`` sees it (objects move in and out of its view)."""
    now = matches(event.obj)
    if event.type != "MODIFIED" or event.previous is None:
        return (event.type, event.obj) if now else None
    before = matches(event.previous)
    if now:
        return ("MODIFIED" if before else "ADDED"), event.obj
    return ("DELETED", event.obj) if before else None
