"""MetaServer: a read-only, Kubernetes-style API on the edge for local apps, served from MetaManager's store.

``curl 127.0.0.1:10550/api/v1/services``, ``kubectl --server http://127.0.0.1:10550 get pods`` and the
``kubernetes`` Python client pointed at it work, with the cloud reachable or not. Served: ``pods``,
``services``, ``endpoints``, ``configmaps`` and ``nodes`` (core ``v1``) and ``devices`` / ``devicemodels``
(``devices.kubeedge.io/v1beta1``): list (``labelSelector``, ``fieldSelector``), get, and watch
(``?watch=true``, one JSON event per line as the API server streams them). Secrets are never served to
local apps (403); every write is refused (405): the store follows the cloud, whose API is the one to change.

Resource versions: objects carry the cloud's ``metadata.resourceVersion``; lists carry the store revision
(``s<n>``, see :func:`~edgecore.metamanager.revision_token`). A watch without ``resourceVersion`` (or with
``0``) starts with an ADDED event per existing object, as the API server does; with the version of a list or
of an object it has seen, it resumes after it; with one the store no longer holds, it gets the API server's
``410 Expired`` ERROR event, and lists again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from typing import Any, Final

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from edgecore.errors import MetaRevisionGoneError, MetaSelectorError, MetaServerError
from edgecore.metamanager import EventType, MetaEvent, MetaManager, Subscription, revision_token
from serving import join_host_port, split_host_port, start_site

__all__ = ["DEFAULT_ADDRESS", "KUBE_VERSION", "MetaServer", "Selector"]

log = logging.getLogger(__name__)

DEFAULT_ADDRESS: Final = "127.0.0.1:10550"
#: The Kubernetes API version ``/version`` reports (the API the served objects follow).
KUBE_VERSION: Final = "v1.28.7"

_CORE: Final = "v1"
_DEVICES: Final = "devices.kubeedge.io/v1beta1"
_READ_VERBS: Final = ("get", "list", "watch")


@dataclass(frozen=True)
class _Resource:
    plural: str
    singular: str
    meta_type: str
    kind: str
    api_version: str
    namespaced: bool
    short_names: tuple[str, ...] = ()

    def discovery(self) -> dict[str, Any]:
        return {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(_READ_VERBS),
            **({"shortNames": list(self.short_names)} if self.short_names else {}),
        }


_RESOURCES: Final = {
    (resource.api_version, resource.plural): resource
    for resource in (
        _Resource("pods", "pod", "pod", "Pod", _CORE, True, ("po",)),
        _Resource("services", "service", "service", "Service", _CORE, True, ("svc",)),
        _Resource("endpoints", "endpoints", "endpoints", "Endpoints", _CORE, True, ("ep",)),
        _Resource("configmaps", "configmap", "configmap", "ConfigMap", _CORE, True, ("cm",)),
        _Resource("nodes", "node", "node", "Node", _CORE, False, ("no",)),
        _Resource("devices", "device", "device", "Device", _DEVICES, True),
        _Resource("devicemodels", "devicemodel", "devicemodel", "DeviceModel", _DEVICES, True),
    )
}
_FORBIDDEN: Final = frozenset({"secrets"})


# --- selectors ----------------------------------------------------------------------------------------------

_LABEL_KEY = r"[A-Za-z0-9](?:[-A-Za-z0-9_./]*[A-Za-z0-9])?"
_LABEL_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET_REQUIREMENT = re.compile(rf"^({_LABEL_KEY})\s+(in|notin)\s+\((.*)\)$")
_EQUALITY = re.compile(rf"^(!?)({_LABEL_KEY})\s*(?:(==|=|!=)\s*(.*))?$")
_FIELD = re.compile(r"^([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*)$")


def _split_terms(text: str) -> list[str]:
    """Split at the commas that are not inside ``( )`` (set-based label requirements hold commas)."""
    terms, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            terms.append(text[start:index].strip())
            start = index + 1
    terms.append(text[start:].strip())
    return [term for term in terms if term]


Requirement = Callable[[Mapping[str, Any]], bool]


class Selector:
    """A Kubernetes label selector and field selector, ANDed: :meth:`matches` tells whether an object fits.

    Labels: ``k``, ``!k``, ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``. Fields: ``path=v``,
    ``path==v``, ``path!=v`` for any dotted path (``metadata.name``, ``spec.nodeName``, ``status.phase``); a
    missing field reads as an empty string. Raises :class:`MetaSelectorError` for anything else.
    """

    def __init__(self, label_selector: str = "", field_selector: str = "") -> None:
        self._requirements = [
            *(_label_requirement(term) for term in _split_terms(label_selector)),
            *(_field_requirement(term) for term in _split_terms(field_selector)),
        ]

    def matches(self, obj: Mapping[str, Any]) -> bool:
        """True if ``obj`` meets every requirement."""
        return all(requirement(obj) for requirement in self._requirements)


def _labels(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    labels = obj.get("metadata", {}).get("labels")
    return labels if isinstance(labels, dict) else {}


def _label_requirement(term: str) -> Requirement:
    if match := _SET_REQUIREMENT.match(term):
        key, operator, values_text = match.group(1), match.group(2), match.group(3)
        values = {value.strip() for value in values_text.split(",")}
        if operator == "in":
            return lambda obj: _labels(obj).get(key) in values
        return lambda obj: _labels(obj).get(key) not in values
    match = _EQUALITY.match(term)
    if match is None:
        raise MetaSelectorError(term, "expected k, !k, k=v, k!=v, k in (a,b) or k notin (a,b)")
    negated, key, operator, value = match.groups()
    if operator is None:
        return (lambda obj: key not in _labels(obj)) if negated else (lambda obj: key in _labels(obj))
    if negated or not re.fullmatch(_LABEL_VALUE, value.strip()):
        raise MetaSelectorError(term, "not a valid label requirement")
    wanted = value.strip()
    if operator == "!=":
        return lambda obj: _labels(obj).get(key) != wanted
    return lambda obj: _labels(obj).get(key) == wanted


def _field(obj: Mapping[str, Any], path: list[str]) -> str:
    value: Any = obj
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, bool):  # as JSON spells it, like the API server compares it
        return "true" if value else "false"
    return "" if value is None else str(value)


def _field_requirement(term: str) -> Requirement:
    match = _FIELD.match(term)
    if match is None:
        raise MetaSelectorError(term, "expected field=value or field!=value")
    path, operator, wanted = match.group(1).split("."), match.group(2), match.group(3).strip()
    if operator == "!=":
        return lambda obj: _field(obj, path) != wanted
    return lambda obj: _field(obj, path) == wanted


# --- the server ---------------------------------------------------------------------------------------------


def _encode(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _json(body: Mapping[str, Any], status: int = 200) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(body, separators=(",", ":")), content_type="application/json"
    )


def _status_body(
    code: int, reason: str, message: str, details: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The API server's ``Status`` object for a failure."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = dict(details)
    return body


def _status(code: int, reason: str, message: str, details: Mapping[str, Any] | None = None) -> web.Response:
    return _json(_status_body(code, reason, message, details), status=code)


def _typed(obj: Mapping[str, Any], resource: _Resource) -> dict[str, Any]:
    """The stored object with its ``kind`` and ``apiVersion`` (the cloud's messages may leave them out)."""
    return {**obj, "apiVersion": resource.api_version, "kind": resource.kind}


class _EncodedObjects:
    """Each served object's JSON (with ``kind`` / ``apiVersion``), encoded once rather than per request.

    Encoding dominates the cost of a large list (about 20 ms for 1,000 pods). MetaManager replaces an object
    on every change and never modifies one, so the cached text is current as long as the stored object is
    the very one it was made from.
    """

    def __init__(self, resource: _Resource) -> None:
        self._resource = resource
        self._entries: dict[tuple[str, str], tuple[Mapping[str, Any], bytes]] = {}

    def encode(self, obj: Mapping[str, Any]) -> bytes:
        """The JSON of ``obj`` as served."""
        metadata = obj.get("metadata", {})
        key = (str(metadata.get("namespace", "")), str(metadata.get("name", "")))
        entry = self._entries.get(key)
        if entry is not None and entry[0] is obj:
            return entry[1]
        data = json.dumps(_typed(obj, self._resource), separators=(",", ":")).encode()
        self._entries[key] = (obj, data)
        return data

    def keep_only(self, objects: Sequence[Mapping[str, Any]]) -> None:
        """Forget the entries of objects no longer stored (``objects``: every stored one of the type)."""
        if len(self._entries) > len(objects):
            live = {id(obj) for obj in objects}
            self._entries = {key: entry for key, entry in self._entries.items() if id(entry[0]) in live}


def _namespace_of(obj: Mapping[str, Any]) -> str:
    namespace = obj.get("metadata", {}).get("namespace")
    return namespace if isinstance(namespace, str) else ""


def _split_address(address: str) -> tuple[str, int]:
    parts = split_host_port(address)
    if parts is None:
        raise MetaServerError(address, "expected host:port, e.g. 127.0.0.1:10550")
    return parts


def _edgetwin_version() -> str:
    try:
        return importlib_metadata.version("edgetwin")
    except importlib_metadata.PackageNotFoundError:
        return "0.0.0"


class MetaServer:
    """The MetaServer as a supervised module: ``start`` binds ``address`` (``host:port``, port 0 = any)."""

    name = "metaserver"

    def __init__(
        self,
        meta: MetaManager,
        address: str = DEFAULT_ADDRESS,
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._meta = meta
        self._address = address
        self._host, self._requested_port = _split_address(address)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._watches: set[Subscription] = set()
        self._encoded = {resource.plural: _EncodedObjects(resource) for resource in _RESOURCES.values()}
        self._stopped: asyncio.Future[None] | None = None
        registry = registry if registry is not None else CollectorRegistry()
        self._requests = Counter(
            "edgetwin_metaserver_requests",
            "MetaServer requests by resource, verb and status code",
            ["resource", "verb", "code"],
            registry=registry,
        )
        self._watch_gauge = Gauge("edgetwin_metaserver_watches", "Open MetaServer watches", registry=registry)

    @property
    def port(self) -> int:
        """The port actually bound (differs from the requested one when that was 0)."""
        if self._port is None:
            raise MetaServerError(self._address, "the server is not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL of the running server, e.g. ``http://127.0.0.1:10550``."""
        return f"http://{join_host_port(self._host, self.port)}"

    async def start(self) -> None:
        """Bind and serve; raises :class:`MetaServerError` if the address cannot be bound."""
        app = web.Application()
        app.router.add_get("/healthz", self._ok)
        app.router.add_get("/livez", self._ok)
        app.router.add_get("/readyz", self._ok)
        app.router.add_get("/version", self._version)
        app.router.add_get("/api", self._api_versions)
        app.router.add_get("/api/v1", self._core_resources)
        app.router.add_get("/apis", self._api_groups)
        app.router.add_get("/apis/{group}", self._api_group)
        app.router.add_get("/apis/{group}/{version}", self._group_resources)
        for path in (
            "/api/{version:v1}/{plural}",
            "/api/{version:v1}/{plural}/{name}",
            "/api/{version:v1}/namespaces/{namespace}/{plural}",
            "/api/{version:v1}/namespaces/{namespace}/{plural}/{name}",
            "/apis/{group}/{version}/{plural}",
            "/apis/{group}/{version}/{plural}/{name}",
            "/apis/{group}/{version}/namespaces/{namespace}/{plural}",
            "/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}",
        ):
            app.router.add_route("*", path, self._resource)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        # handler_cancellation: a watch whose client went away ends at once instead of at its next event.
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        self._port = await start_site(
            runner,
            self._host,
            self._requested_port,
            error=lambda reason: MetaServerError(self._address, reason),
        )
        self._runner = runner
        self._stopped = asyncio.get_running_loop().create_future()
        log.info("MetaServer serving", extra={"url": self.url})

    async def wait(self) -> None:
        """Wait while serving (an aiohttp server has no failure of its own to report)."""
        if self._stopped is not None:
            await asyncio.shield(self._stopped)

    async def stop(self) -> None:
        """End the watches and stop serving; idempotent."""
        for subscription in list(self._watches):
            subscription.close()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        stopped, self._stopped = self._stopped, None
        if stopped is not None and not stopped.done():
            stopped.set_result(None)

    # --- discovery --------------------------------------------------------------------------------------

    async def _ok(self, request: web.Request) -> web.Response:
        if not self._meta.running:
            return web.Response(status=503, text="metamanager is not running")
        return web.Response(text="ok")

    async def _version(self, request: web.Request) -> web.Response:
        major, minor = KUBE_VERSION.removeprefix("v").split(".")[:2]
        return _json(
            {
                "major": major,
                "minor": minor,
                "gitVersion": f"{KUBE_VERSION}-edgetwin-v{_edgetwin_version()}",
                "gitCommit": "",
                "gitTreeState": "clean",
                "buildDate": "1970-01-01T00:00:00Z",
                "goVersion": "",
                "compiler": "edgetwin",
                "platform": "linux",
            }
        )

    async def _api_versions(self, request: web.Request) -> web.Response:
        return _json(
            {
                "kind": "APIVersions",
                "versions": [_CORE],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": request.host}],
            }
        )

    async def _core_resources(self, request: web.Request) -> web.Response:
        return self._resource_list(_CORE)

    def _resource_list(self, group_version: str) -> web.Response:
        resources = [r.discovery() for r in _RESOURCES.values() if r.api_version == group_version]
        return _json(
            {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": group_version,
                "resources": resources,
            }
        )

    @staticmethod
    def _group(name: str) -> dict[str, Any]:
        versions = sorted(
            {r.api_version for r in _RESOURCES.values() if r.api_version.startswith(f"{name}/")}
        )
        entries = [{"groupVersion": gv, "version": gv.partition("/")[2]} for gv in versions]
        return {"name": name, "versions": entries, "preferredVersion": entries[-1]}

    async def _api_groups(self, request: web.Request) -> web.Response:
        names = sorted({r.api_version.partition("/")[0] for r in _RESOURCES.values() if "/" in r.api_version})
        return _json({"kind": "APIGroupList", "apiVersion": "v1", "groups": [self._group(n) for n in names]})

    async def _api_group(self, request: web.Request) -> web.Response:
        name = request.match_info["group"]
        if not any(r.api_version.startswith(f"{name}/") for r in _RESOURCES.values()):
            return self._not_found_path(request)
        return _json({"kind": "APIGroup", "apiVersion": "v1", **self._group(name)})

    async def _group_resources(self, request: web.Request) -> web.Response:
        group_version = f"{request.match_info['group']}/{request.match_info['version']}"
        if not any(r.api_version == group_version for r in _RESOURCES.values()):
            return self._not_found_path(request)
        return self._resource_list(group_version)

    # --- objects ----------------------------------------------------------------------------------------

    async def _unknown(self, request: web.Request) -> web.Response:
        if request.method not in ("GET", "HEAD"):
            return self._read_only(request, "other")
        return self._not_found_path(request)

    def _not_found_path(self, request: web.Request) -> web.Response:
        self._requests.labels("other", "get", "404").inc()
        return _status(404, "NotFound", "the server could not find the requested resource")

    def _read_only(self, request: web.Request, resource: str) -> web.Response:
        self._requests.labels(resource, "write", "405").inc()
        return _status(
            405,
            "MethodNotAllowed",
            f"the MetaServer is read-only: {request.method} is not allowed; "
            "change objects through the cloud's Kubernetes API",
        )

    async def _resource(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        group_version = f"{info['group']}/{info['version']}" if "group" in info else info["version"]
        plural, namespace, name = info["plural"], info.get("namespace"), info.get("name")
        if plural in _FORBIDDEN:
            self._requests.labels(plural, "any", "403").inc()
            return _status(
                403,
                "Forbidden",
                f"{plural} are not served by the MetaServer: local apps never see the edge's secrets",
                {"kind": plural},
            )
        resource = _RESOURCES.get((group_version, plural))
        if resource is None or (namespace is not None and not resource.namespaced):
            return self._not_found_path(request)
        if request.method not in ("GET", "HEAD"):
            return self._read_only(request, plural)
        if not self._meta.running:
            self._requests.labels(plural, "get", "503").inc()
            return _status(503, "ServiceUnavailable", "the edge's object store (metamanager) is not running")
        if name is not None:
            if resource.namespaced and namespace is None:
                return self._not_found_path(request)
            return self._get(resource, namespace or "", name)
        try:
            selector = Selector(
                request.query.get("labelSelector", ""), request.query.get("fieldSelector", "")
            )
        except MetaSelectorError as exc:
            self._requests.labels(plural, "list", "400").inc()
            return _status(400, "BadRequest", exc.reason)
        if request.query.get("watch", "").lower() in ("true", "1"):
            return await self._watch(request, resource, namespace, selector)
        return self._list(resource, namespace, selector)

    def _get(self, resource: _Resource, namespace: str, name: str) -> web.Response:
        obj = self._meta.get(resource.meta_type, namespace, name)
        if obj is None:
            self._requests.labels(resource.plural, "get", "404").inc()
            return _status(
                404,
                "NotFound",
                f'{resource.plural} "{name}" not found',
                {"name": name, "kind": resource.plural},
            )
        self._requests.labels(resource.plural, "get", "200").inc()
        return web.Response(body=self._encoded[resource.plural].encode(obj), content_type="application/json")

    def _list(self, resource: _Resource, namespace: str | None, selector: Selector) -> web.Response:
        encoded = self._encoded[resource.plural]
        revision = self._meta.revision
        objects = self._meta.list(resource.meta_type, namespace)
        if namespace is None:
            encoded.keep_only(objects)
        items = b",".join(encoded.encode(obj) for obj in objects if selector.matches(obj))
        head = {
            "kind": f"{resource.kind}List",
            "apiVersion": resource.api_version,
            "metadata": {"resourceVersion": revision_token(revision)},
        }
        # The list is assembled from the objects' cached JSON: ``{...head, "items": [...]}``.
        body = json.dumps(head, separators=(",", ":")).encode()[:-1] + b',"items":[' + items + b"]}"
        self._requests.labels(resource.plural, "list", "200").inc()
        return web.Response(body=body, content_type="application/json")

    async def _watch(
        self, request: web.Request, resource: _Resource, namespace: str | None, selector: Selector
    ) -> web.StreamResponse:
        query = request.query
        version = query.get("resourceVersion", "")
        initial: list[dict[str, Any]] = []
        # The snapshot and the subscription are taken in one step (no await between): nothing is missed.
        try:
            if version in ("", "0"):
                subscription = self._meta.subscribe([resource.meta_type])
                initial = [o for o in self._meta.list(resource.meta_type, namespace) if selector.matches(o)]
            else:
                subscription = self._meta.subscribe(
                    [resource.meta_type], since=self._meta.revision_at(version)
                )
        except MetaRevisionGoneError as exc:
            response = await self._open_stream(request, resource)
            await self._write_gone(response, exc)
            return response
        snapshot_revision = self._meta.revision
        response = await self._open_stream(request, resource)
        self._watches.add(subscription)
        self._watch_gauge.inc()
        encoded = self._encoded[resource.plural]
        try:
            for obj in initial:
                await self._write_event(response, EventType.ADDED.value, encoded.encode(obj))
            # After a snapshot the client may resume from the revision it reflects (no bookmark on a resumed
            # watch: its replayed events come after and a resume from the bookmark would skip them).
            if version in ("", "0") and query.get("allowWatchBookmarks", "").lower() in ("true", "1"):
                bookmark = {
                    "kind": resource.kind,
                    "apiVersion": resource.api_version,
                    "metadata": {"resourceVersion": revision_token(snapshot_revision)},
                }
                await self._write_event(response, "BOOKMARK", _encode(bookmark))
            timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds", "").isdigit() else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._stream(response, subscription, resource, namespace, selector)
        except MetaRevisionGoneError as exc:  # the watcher fell too far behind: it must list again
            await self._write_gone(response, exc)
        except ConnectionResetError:
            log.debug("watch client went away", extra={"resource": resource.plural})
        finally:
            subscription.close()
            self._watches.discard(subscription)
            self._watch_gauge.dec()
        return response

    async def _open_stream(self, request: web.Request, resource: _Resource) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        self._requests.labels(resource.plural, "watch", "200").inc()
        return response

    async def _stream(
        self,
        response: web.StreamResponse,
        subscription: Subscription,
        resource: _Resource,
        namespace: str | None,
        selector: Selector,
    ) -> None:
        encoded = self._encoded[resource.plural]
        async for event in subscription:
            kind = _event_type(event, namespace, selector)
            if kind is not None:
                await self._write_event(response, kind.value, encoded.encode(event.object))

    @staticmethod
    async def _write_event(response: web.StreamResponse, kind: str, obj: bytes) -> None:
        await response.write(b'{"type":"' + kind.encode() + b'","object":' + obj + b"}\n")

    async def _write_gone(self, response: web.StreamResponse, error: MetaRevisionGoneError) -> None:
        """The API server's answer to a watch from a version it no longer holds: an ERROR event, 410."""
        await self._write_event(response, "ERROR", _encode(_status_body(410, "Expired", str(error))))


def _event_type(event: MetaEvent, namespace: str | None, selector: Selector) -> EventType | None:
    """What a watcher filtered by ``namespace`` and ``selector`` sees of ``event``, as the API server says it.

    An object that starts to match is ADDED, one that stops matching is DELETED (with its new state).
    """

    def visible(obj: Mapping[str, Any] | None) -> bool:
        in_namespace = namespace is None or _namespace_of(obj or {}) == namespace
        return obj is not None and in_namespace and selector.matches(obj)

    now = event.type is not EventType.DELETED and visible(event.object)
    before = visible(event.previous)
    if now and before:
        return EventType.MODIFIED
    if now:
        return EventType.ADDED
    if before:
        return EventType.DELETED
    return None
