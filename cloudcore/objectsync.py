"""The durable "last acknowledged resourceVersion per edge node and resource", kept as ObjectSync CRs.

KubeEdge's cloudcore records what each edge node persisted in ObjectSync objects
(``objectsyncs.reliablesyncs.kubeedge.io`` v1alpha1), so a restarted or second cloudcore neither loses nor
re-sends what a node already has. :class:`ObjectSyncStore` keeps the same objects, adapted to edgetwin's
key (node, resource string):

- name ``<node>.<id>``, ``<id>`` a digest of the resource string (KubeEdge uses the object's UID, which a
  resource string does not carry); a node name too long for that is digested as well, so names stay
  valid DNS subdomains;
- ``spec.objectAPIVersion`` / ``objectKind`` / ``objectName`` for object resources ``<ns>/<type>/<name>``
  of known types (empty for other resources, e.g. twin updates);
- ``status.objectResourceVersion``: the acknowledged version (written through the status subresource);
- annotations ``edgetwin.io/node`` and ``edgetwin.io/resource`` hold the exact key, label
  ``edgetwin.io/node`` (the node name, or its digest when longer than a label value) selects a node's.

All of them live in one namespace (cloudcore's, ``kubeedge`` by default, created when missing) rather than
in each object's namespace as KubeEdge does: resource strings are not all namespaced objects, and a
deleted namespace must not make acknowledgements impossible to record.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import Awaitable
from typing import Final, TypeVar

from kubernetes import client as k8s
from prometheus_client import CollectorRegistry, Counter

from cloudcore.errors import CloudCoreError, KubeConflictError, KubeNotFoundError
from cloudcore.kube import MERGE_PATCH, bundled_crd, ensure_crd, ensure_namespace, list_all, request

__all__ = [
    "NODE_ANNOTATION",
    "NODE_LABEL",
    "OBJECTSYNC_CRD_FILE",
    "RESOURCE_ANNOTATION",
    "ObjectSyncStore",
    "install_objectsync_crd",
    "objectsync_name",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

GROUP: Final = "reliablesyncs.kubeedge.io"
VERSION: Final = "v1alpha1"
PLURAL: Final = "objectsyncs"
OBJECTSYNC_CRD_FILE: Final = "objectsync_v1alpha1.yaml"
NODE_LABEL: Final = "edgetwin.io/node"
NODE_ANNOTATION: Final = "edgetwin.io/node"
RESOURCE_ANNOTATION: Final = "edgetwin.io/resource"

_DNS_SUBDOMAIN: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_MAX_NAME: Final = 253
_MAX_LABEL_VALUE: Final = 63
_DIGEST_CHARS: Final = 20  # 80 bits: no collision among the resources of one node in practice

# resource type -> (apiVersion, kind) of the objects edgetwin sends to edge nodes.
_KINDS: Final = {
    "pod": ("v1", "Pod"),
    "configmap": ("v1", "ConfigMap"),
    "secret": ("v1", "Secret"),
    "service": ("v1", "Service"),
    "endpoints": ("v1", "Endpoints"),
    "node": ("v1", "Node"),
    "lease": ("coordination.k8s.io/v1", "Lease"),
    "device": ("devices.kubeedge.io/v1beta1", "Device"),
    "devicemodel": ("devices.kubeedge.io/v1beta1", "DeviceModel"),
}


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_DIGEST_CHARS]


def objectsync_name(node: str, resource: str) -> str:
    """The ObjectSync name for (node, resource): ``<node>.<digest of resource>``, always a valid name."""
    name = f"{node}.{_digest(resource)}"
    if len(name) > _MAX_NAME or not _DNS_SUBDOMAIN.match(name):
        name = f"{_digest(node)}.{_digest(resource)}"
    return name


def _node_label(node: str) -> str:
    return node if len(node) <= _MAX_LABEL_VALUE and _DNS_SUBDOMAIN.match(node) else _digest(node)


def _object_spec(resource: str) -> dict[str, str]:
    parts = resource.split("/")
    if len(parts) == 3 and parts[1] in _KINDS and parts[2]:
        api_version, kind = _KINDS[parts[1]]
        return {"objectAPIVersion": api_version, "objectKind": kind, "objectName": parts[2]}
    return {}


async def install_objectsync_crd(api: k8s.ApiClient, *, timeout: float = 30.0) -> None:
    """Install (or update) the ObjectSync CRD and wait until it is served."""
    await ensure_crd(api, bundled_crd(OBJECTSYNC_CRD_FILE), timeout=timeout)


class ObjectSyncStore:
    """The cloud link's durable ack store (``cloudsync``'s ``AckStore``) in the Kubernetes API.

    ``record`` keeps, per (node, resource), the order of its calls, and skips the write when the version
    is the one already stored. The CRD must be installed (:func:`install_objectsync_crd`). Errors are
    :class:`~cloudcore.errors.CloudCoreError` leaves (and counted); nothing is retried here, the link
    retries on its own schedule.
    """

    def __init__(
        self, api: k8s.ApiClient, *, namespace: str = "kubeedge", registry: CollectorRegistry | None = None
    ) -> None:
        self._api = api
        self._namespace = namespace
        self._path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
        self._known: dict[tuple[str, str], str] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._namespace_ready = False
        registry = registry if registry is not None else CollectorRegistry()
        self._writes = Counter(
            "edgetwin_objectsync_writes",
            "Acknowledged versions written to ObjectSync objects",
            registry=registry,
        )
        self._errors = Counter(
            "edgetwin_objectsync_errors",
            "Failed Kubernetes API calls of the ObjectSync store, by operation",
            ["operation"],
            registry=registry,
        )
        for operation in ("load", "record", "forget"):
            self._errors.labels(operation=operation)

    @property
    def namespace(self) -> str:
        """The namespace holding the ObjectSync objects."""
        return self._namespace

    async def load(self, node: str | None = None) -> dict[tuple[str, str], str]:
        """Every recorded ``(node, resource) -> resourceVersion``, or only ``node``'s."""
        query: list[tuple[str, str | int]] = []
        if node is not None:
            query.append(("labelSelector", f"{NODE_LABEL}={_node_label(node)}"))
        try:
            items = await self._counted("load", list_all(self._api, self._path, query=query), absent_ok=True)
        except KubeNotFoundError:
            return {}  # the namespace does not exist yet: nothing was ever recorded
        found: dict[tuple[str, str], str] = {}
        for item in items:
            annotations = (item.get("metadata") or {}).get("annotations") or {}
            owner, resource = annotations.get(NODE_ANNOTATION), annotations.get(RESOURCE_ANNOTATION)
            version = (item.get("status") or {}).get("objectResourceVersion")
            # Objects without the key are KubeEdge's own or half-written ones (created, status not yet set).
            if owner and resource and version and (node is None or owner == node):
                found[(owner, resource)] = version
        self._known.update(found)
        return found

    async def record(self, node: str, resource: str, version: str) -> None:
        """Store ``version`` as the last one ``node`` acknowledged for ``resource`` (durable on return)."""
        key = (node, resource)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if self._known.get(key) == version:
                return
            name = objectsync_name(node, resource)
            await self._counted("record", self._write(key, name, version))
            self._known[key] = version
            self._writes.inc()

    async def _write(self, key: tuple[str, str], name: str, version: str) -> None:
        if key in self._known:
            try:
                await self._patch_status(name, version)
            except KubeNotFoundError:
                pass  # deleted behind our back: create it again below
            else:
                return
        await self._create(key, name)
        await self._patch_status(name, version)

    async def _patch_status(self, name: str, version: str) -> None:
        # The status subresource: a create ignores the status, and a main-resource write would too.
        await request(
            self._api,
            "PATCH",
            f"{self._path}/{name}/status",
            body={"status": {"objectResourceVersion": version}},
            content_type=MERGE_PATCH,
            operation=f"record objectsync {name}",
        )

    async def _create(self, key: tuple[str, str], name: str) -> None:
        node, resource = key
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ObjectSync",
            "metadata": {
                "name": name,
                "namespace": self._namespace,
                "labels": {NODE_LABEL: _node_label(node)},
                "annotations": {NODE_ANNOTATION: node, RESOURCE_ANNOTATION: resource},
            },
            "spec": _object_spec(resource),
        }
        if not self._namespace_ready:
            await ensure_namespace(self._api, self._namespace)
            self._namespace_ready = True
        # A conflict: written before (by us before a restart, or by another replica); only the status changes.
        with contextlib.suppress(KubeConflictError):
            await request(self._api, "POST", self._path, body=body, operation=f"create objectsync {name}")

    async def forget_node(self, node: str) -> None:
        """Delete everything recorded for ``node`` (the node was deleted or re-joined from scratch)."""
        query: list[tuple[str, str | int]] = [("labelSelector", f"{NODE_LABEL}={_node_label(node)}")]
        try:
            items = await self._counted(
                "forget", list_all(self._api, self._path, query=query), absent_ok=True
            )
        except KubeNotFoundError:
            items = []
        for item in items:
            metadata = item.get("metadata") or {}
            if (metadata.get("annotations") or {}).get(NODE_ANNOTATION) != node:
                continue  # another node whose long name has the same label digest
            try:
                path = f"{self._path}/{metadata['name']}"
                await self._counted(
                    "forget",
                    request(self._api, "DELETE", path, operation="delete objectsync"),
                    absent_ok=True,
                )
            except KubeNotFoundError:
                pass
        for key in [key for key in self._known if key[0] == node]:
            del self._known[key]
            self._locks.pop(key, None)
        log.info(
            "forgot the acknowledged versions of node %s", node, extra={"node": node, "objects": len(items)}
        )

    async def _counted(self, operation: str, work: Awaitable[T], *, absent_ok: bool = False) -> T:
        """Await ``work``, counting its failure; ``absent_ok``: a 404 is an answer the caller handles."""
        try:
            return await work
        except KubeNotFoundError:
            if not absent_ok:
                self._errors.labels(operation=operation).inc()
            raise
        except CloudCoreError:
            self._errors.labels(operation=operation).inc()
            raise
