"""Kubernetes watches for cloudcore's controllers, read off the loop by a thread of their own.

The blocking ``kubernetes`` client reads a watch as a long HTTP response; :func:`watch` reads it line by line
in a worker thread and hands each event to the loop (``call_soon_threadsafe``). Errors are translated where
they enter: a 410 Gone (the resourceVersion is older than the API keeps) becomes
:class:`~cloudcore.errors.WatchExpiredError` (list again, then watch), other failures the errors of
:func:`cloudcore.kube.translate_error`.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import urllib3
from kubernetes import client as k8s

from cloudcore.errors import CloudCoreError, KubeUnavailableError, WatchExpiredError
from cloudcore.kube import JSON, translate_error

__all__ = ["JsonObject", "WatchEvent", "watch"]

JsonObject = dict[str, Any]
#: One watch event: ``(type, object)``; type is ADDED, MODIFIED, DELETED or BOOKMARK.
WatchEvent = tuple[str, JsonObject]
_GONE = 410
_END = object()


@asynccontextmanager
async def watch(
    api_client: k8s.ApiClient,
    path: str,
    resource_version: str,
    *,
    timeout_seconds: int,
    query: Sequence[tuple[str, str]] = (),
    operation: str = "",
) -> AsyncIterator[AsyncIterator[WatchEvent]]:
    """Watch the collection ``path`` (e.g. ``/api/v1/pods``) from ``resource_version``, with bookmarks.

    ``query`` adds parameters (``fieldSelector``, ``labelSelector``); the server ends the watch after
    ``timeout_seconds``. Yields an async iterator of events; a 410 Gone raises :class:`WatchExpiredError`,
    other failures the errors of :func:`cloudcore.kube.translate_error` (``operation`` names the watch in
    them, default ``"watch <path>"``). Leaving the context stops the reading thread.
    """
    parameters = [
        ("watch", "true"),
        ("resourceVersion", resource_version),
        ("allowWatchBookmarks", "true"),
        ("timeoutSeconds", str(timeout_seconds)),
        *query,
    ]
    prepared = api_client.param_serialize(
        method="GET",
        resource_path=path,
        query_params=parameters,
        header_params={"Accept": JSON},
        auth_settings=["BearerToken"],
    )
    stream = _WatchThread(operation or f"watch {path}", lambda: api_client.call_api(*prepared).response)
    stream.start()
    try:
        yield stream.events()
    finally:
        await stream.stop()


class _WatchThread:
    """One watch request, read line by line in a thread; events reach the loop through a queue."""

    def __init__(self, operation: str, open_response: Callable[[], object]) -> None:
        self._operation = operation
        self._open = open_response
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._response: urllib3.HTTPResponse | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        # Not a daemon: the test hygiene check sees it if stop() ever fails to end it.
        self._thread = threading.Thread(target=self._run, name=operation.replace(" ", "-"))

    def start(self) -> None:
        self._thread.start()

    async def stop(self) -> None:
        self._stopping.set()
        # Under the lock: a response the thread has released to the pool must not be shut down.
        with self._lock:
            if self._response is not None:
                self._response.shutdown()  # interrupts the thread's blocking read (urllib3 2.3+)
        await asyncio.to_thread(self._thread.join)

    async def events(self) -> AsyncIterator[WatchEvent]:
        while True:
            item = await self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield cast(WatchEvent, item)

    def _put(self, item: object) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _run(self) -> None:
        try:
            self._read()
        except (k8s.ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            if not self._stopping.is_set():
                self._put(translate_error(exc, self._operation))
        except ValueError as exc:  # a line that is not JSON
            self._put(KubeUnavailableError(self._operation, f"unreadable watch event: {exc}"))
        finally:
            self._put(_END)

    def _read(self) -> None:
        response = cast(urllib3.HTTPResponse, self._open())
        with self._lock:
            self._response = response
        if self._stopping.is_set():
            response.shutdown()
        try:
            if response.status == _GONE:
                self._put(WatchExpiredError(self._operation, _GONE, "Expired", response.reason or ""))
                return
            if not 200 <= response.status < 300:
                raise k8s.ApiException(
                    status=response.status,
                    reason=response.reason,
                    body=response.read().decode(errors="replace"),
                )
            buffer = b""
            for chunk in response.stream(amt=None, decode_content=False):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        self._event(json.loads(line))
        finally:
            with self._lock:
                self._response = None
            response.release_conn()

    def _event(self, event: JsonObject) -> None:
        kind, obj = str(event.get("type")), event.get("object") or {}
        if kind != "ERROR":
            self._put((kind, obj))
            return
        status, reason, message = int(obj.get("code") or 0), str(obj.get("reason")), str(obj.get("message"))
        error: CloudCoreError
        if status == _GONE:
            error = WatchExpiredError(self._operation, status, reason, message)
        else:
            error = translate_error(
                k8s.ApiException(status=status, reason=reason, body=json.dumps(obj)), self._operation
            )
        self._put(error)
