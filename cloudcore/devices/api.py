"""The DeviceController's calls to the Kubernetes API: Devices, DeviceModels, Device status, Events.

Requests go through :func:`cloudcore.kube.request` (a worker thread; errors translated to
:class:`~cloudcore.errors.KubeApiError` and friends); watches through :func:`cloudcore.watch.watch` (a thread
of their own; a 410 Gone becomes :class:`~cloudcore.errors.WatchExpiredError`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from kubernetes import client as k8s

from cloudcore.kube import MERGE_PATCH, request
from cloudcore.watch import JsonObject, WatchEvent, watch
from device_models import GROUP

__all__ = ["DEVICES", "DEVICE_MODELS", "VERSION", "DeviceApi", "JsonObject", "WatchEvent"]

VERSION = "v1beta1"
DEVICES = "devices"
DEVICE_MODELS = "devicemodels"


class DeviceApi:
    """The API calls of the DeviceController, through a blocking ``ApiClient`` (not closed here).

    Lists and watches cover ``namespace`` when it is given, every namespace otherwise.
    """

    def __init__(self, api_client: k8s.ApiClient, namespace: str | None = None) -> None:
        """Use ``api_client``; its connection pool serves the worker threads."""
        self._client = api_client
        self._namespace = namespace

    async def list(self, plural: str) -> tuple[list[JsonObject], str]:
        """Every object of ``plural``, and the list's resourceVersion (to watch from)."""
        found = await request(self._client, "GET", self._collection(plural), operation=f"list {plural}")
        return list(found.get("items") or []), str(found["metadata"]["resourceVersion"])

    async def get_device(self, namespace: str, name: str) -> JsonObject:
        """The Device ``namespace/name`` as the API holds it now."""
        path = f"{_root(namespace)}/{DEVICES}/{name}"
        return await request(self._client, "GET", path, operation=f"read device {namespace}/{name}")

    async def patch_device_status(self, namespace: str, name: str, patch: JsonObject) -> JsonObject:
        """Merge-patch the Device's ``status``; a ``metadata.resourceVersion`` in it makes it conditional."""
        return await request(
            self._client,
            "PATCH",
            f"{_root(namespace)}/{DEVICES}/{name}/status",
            body=patch,
            content_type=MERGE_PATCH,
            operation=f"patch status of device {namespace}/{name}",
        )

    async def create_event(self, namespace: str, event: JsonObject) -> None:
        """Create a core/v1 Event (``event`` as the API's JSON)."""
        path = f"/api/v1/namespaces/{namespace}/events"
        await request(self._client, "POST", path, body=event, operation=f"create event in {namespace}")

    @asynccontextmanager
    async def watch(
        self, plural: str, resource_version: str, *, timeout_seconds: int
    ) -> AsyncIterator[AsyncIterator[WatchEvent]]:
        """Watch ``plural`` from ``resource_version``; the server ends the watch after ``timeout_seconds``.

        Yields an async iterator of events; a 410 Gone raises :class:`WatchExpiredError`, other failures
        the errors of :func:`cloudcore.kube.translate_error`. Leaving the context stops the reading thread.
        """
        path = self._collection(plural)
        async with watch(
            self._client, path, resource_version, timeout_seconds=timeout_seconds, operation=f"watch {plural}"
        ) as events:
            yield events

    def _collection(self, plural: str) -> str:
        if self._namespace is None:
            return f"/apis/{GROUP}/{VERSION}/{plural}"
        return f"{_root(self._namespace)}/{plural}"


def _root(namespace: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}"
