"""A Kubernetes API emulator on kmock that kubectl and the official Python client use like an apiserver.

kmock 0.8's :class:`kmock.KubernetesEmulator` keeps objects but leaves out much of the apiserver's behaviour
(see notes/kube-api-testing.md). This subclass keeps kmock's object array, resource registry and server, and
answers every request itself: server-set metadata, 201 on create, PUT with optimistic concurrency, PATCH by
Content-Type, the status subresource, selectors, resumable watches, discovery, OpenAPI for kubectl, CRDs that
register their resource, and Tables with printer columns. Not emulated: schema validation, admission,
server-side apply, merging lists by key, garbage collection, protobuf.
"""

from __future__ import annotations

import asyncio
import gzip
import importlib.resources
import json
import logging
import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp.web
import kmock
import yaml

from edgetwin.testing.kubeapi import openapi
from edgetwin.testing.kubeapi.handle import KubeApi, write_kubeconfig
from edgetwin.testing.kubeapi.patches import apply_patch
from edgetwin.testing.kubeapi.printers import BUILTIN_COLUMNS
from edgetwin.testing.kubeapi.selectors import FieldSelector, LabelSelector, SelectorError
from edgetwin.testing.kubeapi.store import (
    NAMESPACES,
    ApiStatusError,
    JsonObject,
    ObjectStore,
    ResourceType,
)
from edgetwin.testing.kubeapi.tables import AGE_COLUMN, PrinterColumn, table

SERVER_VERSION = {
    "major": "1",
    "minor": "28",
    "gitVersion": "v1.28.7-edgetwin-emulator",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-02-14T00:00:00Z",
    "goVersion": "go1.21.7",
    "compiler": "gc",
    "platform": "linux/amd64",
}
_log = logging.getLogger(__name__)
_CRDS = ResourceType(
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False, True
)
# The built-in resources kmock ships (group-versions of a recent cluster, without CRDs).
_BUNDLED_RESOURCES = importlib.resources.files("kmock._internal") / "resources.json.gz"
_CRUD_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
_INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


@dataclass(frozen=True)
class _Target:
    """The parts of a URL ``/api(s)/<group>/<version>[/namespaces/<ns>][/<plural>[/<name>[/<sub>]]]``.

    ``plural`` is ``None`` for the group-version's discovery document.
    """

    group: str
    version: str
    plural: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None


def _parse_path(path: str) -> _Target | None:
    parts = [part for part in path.split("/") if part]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    # "/namespaces/<ns>/<plural>" scopes a request; "/namespaces/<ns>/status" is a namespace's subresource.
    if len(rest) >= 3 and rest[0] == "namespaces" and not (group == "" and rest[2] in ("status", "finalize")):
        namespace, rest = rest[1], rest[2:]
    rest += [None] * (3 - len(rest))  # type: ignore[list-item]
    return _Target(group, version, rest[0], namespace, rest[1], "/".join(p for p in rest[2:] if p) or None)


def _json(body: Any, status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.json_response(body, status=status)


def _version_priority(version: str) -> tuple[int, int, int]:
    """Sort key of API versions by Kubernetes' rules: GA before beta before alpha, higher numbers first."""
    head, _, tail = version.removeprefix("v").partition("beta")
    stability = 1
    if not tail:
        head, _, tail = head.partition("alpha")
        stability = 0 if tail else 2
    major = int(head) if head.isdigit() else 0
    minor = int(tail) if tail.isdigit() else 0
    return (-stability, -major, -minor)


class KubeEmulator(kmock.KubernetesEmulator):
    """The emulated apiserver: serve it with ``kmock.Server(emulator)``; ``store`` holds its state.

    ``token``, when set, is the only bearer token accepted (401 for another one; none is fine).
    """

    def __init__(self, *, token: str | None = None, event_log_size: int = 10_000) -> None:
        super().__init__()
        self.token = token
        self.store = ObjectStore(self.objects, event_log_size=event_log_size)
        self._printer_columns: dict[kmock.resource, list[PrinterColumn]] = {
            kmock.resource(*key): columns for key, columns in BUILTIN_COLUMNS.items()
        }
        self._custom: set[kmock.resource] = set()
        # kmock's load_bundled() reads it with a deprecated importlib call: a warning, so an error in tests.
        self.resources.load_data(gzip.decompress(_BUNDLED_RESOURCES.read_bytes()))
        for name in _INITIAL_NAMESPACES:
            self.store.create(NAMESPACES, None, {"metadata": {"name": name}})

    def __attrs_post_init__(self) -> None:
        """Register no kmock reactions: kmock's fallbacks would answer with their simplified semantics."""

    # -- entry point -----------------------------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """Serve one HTTP request.

        kmock's request parsing is bypassed: it takes ``/api/v1/namespaces`` for a namespace prefix.
        """
        try:
            self._authenticate(raw_request)
            return await self._route(raw_request)
        except SelectorError as exc:
            return _json(ApiStatusError(400, "BadRequest", exc.reason).status(), 400)
        except ApiStatusError as exc:
            return _json(exc.status(), exc.code)
        except Exception as exc:  # noqa: BLE001 - a bug here must reach the client as a 500, as in an apiserver
            _log.exception("emulated kube-apiserver failed on %s %s", raw_request.method, raw_request.path)
            return _json(ApiStatusError(500, "InternalError", f"emulator error: {exc!r}").status(), 500)

    def _authenticate(self, request: aiohttp.web.BaseRequest) -> None:
        # kubectl sends no bearer token over plain HTTP, so a request without one is served, as the old
        # insecure port did; a wrong token is refused, so a client with bad credentials fails here too.
        header = request.headers.get("Authorization")
        if self.token is not None and header is not None and header != f"Bearer {self.token}":
            raise ApiStatusError(401, "Unauthorized", "Unauthorized")

    async def _route(self, request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        if request.method == "GET":
            static = self._static(path, request)
            if static is not None:
                return static
        target = _parse_path(path)
        if target is None:
            raise ApiStatusError(404, "NotFound", "the server could not find the requested resource")
        if target.plural is None:
            if request.method != "GET":
                raise ApiStatusError(405, "MethodNotAllowed", f"{request.method} is not allowed on {path}")
            return _json(self._discovery_resources(target.group, target.version))
        rtype = self._resource_type(target.group, target.version, target.plural)
        if rtype is None or (target.namespace is not None and not rtype.namespaced):
            raise ApiStatusError(404, "NotFound", "the server could not find the requested resource")
        if target.subresource not in (None, "status") or (
            target.subresource == "status" and not rtype.status_subresource
        ):
            raise ApiStatusError(404, "NotFound", "the server could not find the requested resource")
        return await self._serve_resource(request, rtype, target)

    def _static(self, path: str, request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse | None:
        if path in ("/healthz", "/livez", "/readyz"):
            return aiohttp.web.Response(text="ok")
        if path == "/version":
            return _json(SERVER_VERSION)
        if path == "/":
            return _json({"paths": self._root_paths()})
        if path == "/api":
            address = f"{request.url.host}:{request.url.port}"
            return _json(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
                }
            )
        if path == "/apis":
            return _json({"kind": "APIGroupList", "apiVersion": "v1", "groups": self._discovery_groups()})
        if path.startswith("/apis/") and path.count("/") == 2:
            group = path.removeprefix("/apis/")
            for found in self._discovery_groups():
                if found["name"] == group:
                    return _json({"kind": "APIGroup", "apiVersion": "v1", **found})
            raise ApiStatusError(404, "NotFound", "the server could not find the requested resource")
        if path == "/openapi/v2":
            if "protobuf" in request.headers.get("Accept", ""):
                return aiohttp.web.Response(
                    body=openapi.OPENAPI_V2_PROTOBUF, content_type=openapi.OPENAPI_V2_PROTOBUF_TYPE
                )
            return _json(openapi.OPENAPI_V2_JSON)
        if path == "/openapi/v3":
            return _json(openapi.root_document(self._served_kinds()))
        if path.startswith("/openapi/v3/"):
            wanted = path.removeprefix("/openapi/v3/")
            kinds = [kind for kind in self._served_kinds() if kind.group_version_path == wanted]
            if not kinds:
                raise ApiStatusError(404, "NotFound", "the server could not find the requested resource")
            return _json(openapi.group_version_document(kinds))
        return None

    # -- resources -------------------------------------------------------------------------------------------

    async def _serve_resource(
        self, request: aiohttp.web.BaseRequest, rtype: ResourceType, target: _Target
    ) -> aiohttp.web.StreamResponse:
        query = request.query
        method = request.method
        if "dryRun" in query:
            # Persisting a dry run would silently change what `kubectl diff` only meant to compare.
            raise ApiStatusError(400, "BadRequest", "dryRun is not emulated; use the real kube-apiserver")
        if method == "GET" and query.get("watch") in ("true", "1"):
            return await self._watch_response(request, rtype, target)
        if method == "GET" and target.name is None:
            return self._list_response(request, rtype, target)
        if method == "GET" and target.name is not None:
            obj = self.store.get(rtype, target.namespace, target.name)
            return self._render(request, rtype, [obj], single=True)
        if method == "POST" and target.name is None:
            if rtype.namespaced and target.namespace is None:
                raise ApiStatusError(404, "NotFound", "the server could not find the requested resource")
            return _json(self._create(rtype, target.namespace, await _read_body(request)), 201)
        if method == "DELETE" and target.name is None:
            return self._delete_collection_response(request, rtype, target)
        if target.name is None:
            raise ApiStatusError(405, "MethodNotAllowed", f"{method} is not allowed on a collection")
        if method == "PUT":
            return _json(self._replace(rtype, target, await _read_body(request)))
        if method == "PATCH":
            current = self.store.get(rtype, target.namespace, target.name)
            patched = apply_patch(current, request.headers.get("Content-Type", ""), await request.read())
            return _json(self._write(rtype, target, patched))
        if method == "DELETE":
            options = await _read_body(request, required=False)
            if "gracePeriodSeconds" in request.query:
                options["gracePeriodSeconds"] = request.query["gracePeriodSeconds"]
            return _json(self._delete(rtype, target.namespace, target.name, options))
        raise ApiStatusError(405, "MethodNotAllowed", f"{method} is not allowed on {request.path}")

    def _list_response(
        self, request: aiohttp.web.BaseRequest, rtype: ResourceType, target: _Target
    ) -> aiohttp.web.Response:
        return self._render(request, rtype, self._select(request, rtype, target.namespace), single=False)

    def _select(
        self, request: aiohttp.web.BaseRequest, rtype: ResourceType, namespace: str | None
    ) -> list[JsonObject]:
        labels = LabelSelector.parse(request.query.get("labelSelector"))
        fields = FieldSelector.parse(request.query.get("fieldSelector"), rtype.kind)
        return [
            obj
            for obj in self.store.list_objects(rtype, namespace)
            if labels.matches(obj["metadata"].get("labels") or {}) and fields.matches(obj)
        ]

    def _render(
        self, request: aiohttp.web.BaseRequest, rtype: ResourceType, objects: list[JsonObject], single: bool
    ) -> aiohttp.web.Response:
        resource_version = str(self.store.resource_version)
        if "as=Table" in request.headers.get("Accept", ""):
            include = request.query.get("includeObject", "Metadata")
            return _json(table(objects, self._columns(rtype), resource_version, include))
        if single:
            return _json(objects[0])
        return _json(
            {
                "apiVersion": rtype.api_version,
                "kind": f"{rtype.kind}List",
                "metadata": {"resourceVersion": resource_version, "continue": ""},
                "items": objects,
            }
        )

    async def _watch_response(
        self, request: aiohttp.web.BaseRequest, rtype: ResourceType, target: _Target
    ) -> aiohttp.web.StreamResponse:
        query = request.query
        labels = LabelSelector.parse(query.get("labelSelector"))
        field_text = query.get("fieldSelector", "")
        if target.name is not None:  # the deprecated watch of one object is a watch by name
            field_text = ",".join(filter(None, [field_text, f"metadata.name={target.name}"]))
        fields = FieldSelector.parse(field_text, rtype.kind)
        since_text = query.get("resourceVersion", "")
        try:
            since = int(since_text) if since_text not in ("", "0") else None
            timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
        except ValueError as exc:
            raise ApiStatusError(400, "BadRequest", f"invalid watch parameter: {exc}") from exc
        as_table = "as=Table" in request.headers.get("Accept", "")
        include = query.get("includeObject", "Metadata")

        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        events = self.store.watch(
            rtype,
            target.namespace,
            since,
            lambda obj: labels.matches(obj["metadata"].get("labels") or {}) and fields.matches(obj),
            timeout,
            abandoned=lambda: request.transport is None or request.transport.is_closing(),
        )
        try:
            try:
                async for type_, obj in events:
                    if as_table:
                        rv = obj["metadata"]["resourceVersion"]
                        obj = table([obj], self._columns(rtype), rv, include)
                    await response.write(json.dumps({"type": type_, "object": obj}).encode() + b"\n")
            except ApiStatusError as exc:
                await response.write(json.dumps({"type": "ERROR", "object": exc.status()}).encode() + b"\n")
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away; there is nobody left to tell
        finally:
            await events.aclose()
        return response

    def _delete_collection_response(
        self, request: aiohttp.web.BaseRequest, rtype: ResourceType, target: _Target
    ) -> aiohttp.web.Response:
        deleted = [
            self._delete(rtype, obj["metadata"].get("namespace"), obj["metadata"]["name"], {})
            for obj in self._select(request, rtype, target.namespace)
        ]
        return _json(
            {
                "apiVersion": rtype.api_version,
                "kind": f"{rtype.kind}List",
                "metadata": {"resourceVersion": str(self.store.resource_version)},
                "items": deleted,
            }
        )

    # -- writes, with the CRD side effects -------------------------------------------------------------------

    def _create(self, rtype: ResourceType, namespace: str | None, body: JsonObject) -> JsonObject:
        if rtype == _CRDS:
            _default_crd(body)
        created = self.store.create(rtype, namespace, body)
        if rtype == _CRDS:
            return self._register_crd(created)
        return created

    def _replace(self, rtype: ResourceType, target: _Target, body: JsonObject) -> JsonObject:
        assert target.name is not None  # routed here only with a name
        self.store.get(rtype, target.namespace, target.name)  # a missing object is a 404 before anything else
        name = body.get("metadata", {}).get("name")
        if name != target.name:
            raise ApiStatusError(
                400,
                "BadRequest",
                f"the name of the object ({name}) does not match the name on the URL ({target.name})",
            )
        if rtype.custom and not body["metadata"].get("resourceVersion"):
            raise ApiStatusError(
                422,
                "Invalid",
                f'{rtype.kind}.{rtype.group} "{name}" is invalid: metadata.resourceVersion: '
                "Invalid value: 0x0: must be specified for an update",
                rtype,
                name,
            )
        return self._write(rtype, target, body)

    def _write(self, rtype: ResourceType, target: _Target, proposed: JsonObject) -> JsonObject:
        assert target.name is not None  # routed here only with a name
        if rtype == _CRDS and target.subresource is None:
            _default_crd(proposed)
        written = self.store.update(rtype, target.namespace, target.name, proposed, target.subresource)
        if rtype == _CRDS and target.subresource is None:
            return self._register_crd(written)
        return written

    def _delete(
        self, rtype: ResourceType, namespace: str | None, name: str, options: Mapping[str, Any]
    ) -> JsonObject:
        if rtype == _CRDS:
            crd = self.store.get(rtype, None, name)
            for version in crd["spec"]["versions"]:
                served = self._resource_type(
                    crd["spec"]["group"], version["name"], crd["spec"]["names"]["plural"]
                )
                if served is not None:
                    self.store.purge(served)
                    del self.resources[served.key]
                    self._custom.discard(served.key)
        return self.store.delete(rtype, namespace, name, options)

    def _register_crd(self, crd: JsonObject) -> JsonObject:
        """Serve the CRD's resource in its served versions and mark the CRD Established."""
        spec, names = crd["spec"], crd["spec"]["names"]
        for version in spec["versions"]:
            resource = kmock.resource(spec["group"], version["name"], names["plural"])
            if not version.get("served", True):
                if resource in self.resources:
                    del self.resources[resource]
                continue
            self.resources[resource] = kmock.ResourceInfo(
                kind=names["kind"],
                singular=names.get("singular") or names["kind"].lower(),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                verbs=_CRUD_VERBS,
                shortnames=names.get("shortNames") or (),
                categories=names.get("categories") or (),
                subresources=(version.get("subresources") or {}).keys(),
            )
            columns = [PrinterColumn.from_crd(c) for c in version.get("additionalPrinterColumns") or ()]
            self._printer_columns[resource] = columns or [AGE_COLUMN]
            self._custom.add(resource)
        now = crd["metadata"]["creationTimestamp"]
        status = {
            "acceptedNames": names,
            "storedVersions": [v["name"] for v in spec["versions"] if v.get("storage")],
            "conditions": [
                {
                    "type": kind,
                    "status": "True",
                    "lastTransitionTime": now,
                    "reason": reason,
                    "message": message,
                }
                for kind, reason, message in (
                    ("NamesAccepted", "NoConflicts", "no conflicts found"),
                    ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
                )
            ],
        }
        if crd.get("status") == status:
            return crd
        return self.store.update(_CRDS, None, crd["metadata"]["name"], {**crd, "status": status}, "status")

    # -- discovery -------------------------------------------------------------------------------------------

    def _resource_type(self, group: str, version: str, plural: str) -> ResourceType | None:
        resource = kmock.resource(group, version, plural)
        if resource not in self.resources:
            return None
        info = self.resources[resource]
        return ResourceType(
            group,
            version,
            plural,
            info.kind or plural.capitalize(),
            bool(info.namespaced),
            "status" in info.subresources,
            custom=resource in self._custom,
        )

    def _registered(self) -> list[kmock.resource]:
        return [kmock.resource(key) for key in self.resources]

    def _columns(self, rtype: ResourceType) -> list[PrinterColumn]:
        return self._printer_columns.get(rtype.key, [AGE_COLUMN])

    def _served_kinds(self) -> list[openapi.ServedKind]:
        return [
            openapi.ServedKind(
                str(r.group), str(r.version), str(r.plural), info.kind or str(r.plural), bool(info.namespaced)
            )
            for r in self._registered()
            for info in [self.resources[r]]
        ]

    def _discovery_groups(self) -> list[JsonObject]:
        versions: dict[str, set[str]] = {}
        for resource in self._registered():
            if resource.group:
                versions.setdefault(str(resource.group), set()).add(str(resource.version))
        groups = []
        for group, found in sorted(versions.items()):
            ordered = sorted(found, key=_version_priority)
            entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in ordered]
            groups.append({"name": group, "versions": entries, "preferredVersion": entries[0]})
        return groups

    def _discovery_resources(self, group: str, version: str) -> JsonObject:
        entries: list[JsonObject] = []
        for resource in sorted(self._registered(), key=lambda r: str(r.plural)):
            if resource.group != group or resource.version != version:
                continue
            info = self.resources[resource]
            common = {"namespaced": bool(info.namespaced), "kind": info.kind}
            entries.append(
                {
                    "name": resource.plural,
                    "singularName": info.singular or "",
                    **common,
                    "verbs": sorted(info.verbs),
                    "shortNames": sorted(info.shortnames),
                    "categories": sorted(info.categories),
                }
            )
            entries += [
                {
                    "name": f"{resource.plural}/{sub}",
                    "singularName": "",
                    **common,
                    "verbs": ["get", "patch", "update"],
                }
                for sub in sorted(info.subresources)
            ]
        if not entries:
            raise ApiStatusError(404, "NotFound", "the server could not find the requested resource")
        group_version = f"{group}/{version}" if group else version
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": entries,
        }

    def _root_paths(self) -> list[str]:
        paths = {
            "/api",
            "/api/v1",
            "/apis",
            "/healthz",
            "/livez",
            "/readyz",
            "/version",
            "/openapi/v2",
            "/openapi/v3",
        }
        for resource in self._registered():
            if resource.group:
                paths |= {f"/apis/{resource.group}", f"/apis/{resource.group}/{resource.version}"}
        return sorted(paths)


def _default_crd(crd: JsonObject) -> None:
    """Validate the few things the emulator relies on and fill the defaults the apiserver fills."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    name = (crd.get("metadata") or {}).get("name")
    if not (spec.get("group") and names.get("plural") and names.get("kind") and spec.get("versions")):
        raise ApiStatusError(
            422, "Invalid", f"CustomResourceDefinition {name!r} needs group, names and versions"
        )
    if name != f"{names['plural']}.{spec['group']}":
        raise ApiStatusError(
            422,
            "Invalid",
            f'CustomResourceDefinition.apiextensions.k8s.io "{name}" is invalid: '
            f'metadata.name: Invalid value: "{name}": must be spec.names.plural+"."+spec.group',
        )
    names.setdefault("singular", names["kind"].lower())
    names.setdefault("listKind", f"{names['kind']}List")
    spec.setdefault("scope", "Namespaced")
    spec.setdefault("conversion", {"strategy": "None"})


async def _read_body(request: aiohttp.web.BaseRequest, required: bool = True) -> JsonObject:
    raw = await request.read()
    if not raw.strip():
        if required:
            raise ApiStatusError(400, "BadRequest", "the request body is empty")
        return {}
    try:
        body = yaml.safe_load(raw) if "yaml" in request.headers.get("Content-Type", "") else json.loads(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise ApiStatusError(400, "BadRequest", f"cannot decode the request body: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiStatusError(400, "BadRequest", "the request body must be an object")
    return body


@asynccontextmanager
async def run_emulator(workdir: Path) -> AsyncIterator[KubeApi]:
    """Serve a fresh :class:`KubeEmulator` on a free loopback port, yield its handle, then stop it."""
    token = secrets.token_urlsafe(24)
    emulator = KubeEmulator(token=token)
    async with kmock.Server(emulator, host="127.0.0.1") as server:
        try:
            url = f"http://127.0.0.1:{server.port}"
            kubeconfig = await asyncio.to_thread(write_kubeconfig, workdir / "kubeconfig", url, token, None)
            yield KubeApi("emulator", url, kubeconfig, token, None, workdir)
        finally:
            # Open watches would otherwise hold the server's shutdown until they time out.
            emulator.store.close()
