"""MetaManager: the edge's copy of the cloud's objects (pods, configmaps, secrets, ...) and its change feed.

The cloud link hands every ``resource`` message to :meth:`MetaManager.received`; insert, update and patch
store the object (the message's content, whole), delete removes it. The call returns once the change is
committed to the ``meta`` table (so the link's acknowledgement means durable); writes that arrive together
share one transaction. Edged and the MetaServer read the objects (:meth:`~MetaManager.get`,
:meth:`~MetaManager.list`) from memory, loaded from SQLite at start, so they keep working while the cloud is
away, across restarts.

Versions. Each object keeps ``metadata.resourceVersion`` as the cloud sent it. Besides, the store counts
its changes: the *store revision* grows by one per change and is persisted, and every change event carries
the revision it made. A watcher resumes from a revision (``subscribe(since=...)``); the last
``history`` events are kept in memory for that. :meth:`~MetaManager.revision_at` turns the resource versions
a Kubernetes client may resume from into revisions: ``s<revision>`` (what lists carry, see
:func:`revision_token`) or the cloud resourceVersion of an object the feed still holds.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cloudsync import Message, MessageFormatError, ObjectRef, Operation
from edgecore.errors import MetaMessageError, MetaRevisionGoneError, MetaStoreError
from edgecore.metastore import MetaRow, MetaSqlite, meta_key

__all__ = [
    "CLUSTER_SCOPED_TYPES",
    "META_TYPES",
    "EventType",
    "MetaEvent",
    "MetaManager",
    "Subscription",
    "revision_token",
]

log = logging.getLogger(__name__)

#: The resource types MetaManager stores (``route.resource`` = ``<ns>/<type>/<name>``).
META_TYPES: Final = frozenset(
    {"pod", "configmap", "secret", "service", "endpoints", "node", "device", "devicemodel", "lease"}
)
#: Types without a namespace: their key is ``/<type>/<name>`` whatever namespace the message names.
CLUSTER_SCOPED_TYPES: Final = frozenset({"node"})

_UPSERTS: Final = frozenset({Operation.INSERT, Operation.UPDATE, Operation.PATCH})
_TOKEN_PREFIX: Final = "s"

Object = dict[str, Any]


class EventType(StrEnum):
    """What happened to an object, as a Kubernetes watch says it."""

    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


@dataclass(frozen=True)
class MetaEvent:
    """One change of the store: ``object`` after it (the last state for DELETED), ``previous`` before it.

    ``revision`` is the store revision the change made. The objects are shared: read them, do not modify.
    """

    type: EventType
    resource_type: str
    object: Object
    previous: Object | None
    revision: int


def revision_token(revision: int) -> str:
    """The resourceVersion string standing for a store revision (what lists carry): ``s<revision>``.

    Distinct from the cloud's numeric resourceVersions the objects carry, so the two never mix up.
    """
    return f"{_TOKEN_PREFIX}{revision}"


class Subscription:
    """The store's changes of some types, in order: ``async for event in subscription``.

    Created by :meth:`MetaManager.subscribe`, it receives events from that moment (after its backlog).
    It ends when closed or when the manager stops. A subscriber that falls ``limit`` events behind is
    dropped: after the events it had, iteration raises :class:`~edgecore.MetaRevisionGoneError` (list
    again, or resume from the last revision seen).
    """

    def __init__(
        self,
        types: frozenset[str],
        backlog: Iterable[MetaEvent],
        *,
        limit: int,
        oldest: int,
        on_close: Callable[[Subscription], None],
    ) -> None:
        self.types = types
        self._on_close = on_close
        self._events: deque[MetaEvent] = deque(backlog)
        self._limit = limit
        self._oldest = oldest
        self._wakeup = asyncio.Event()
        self._closed = False
        self._error: MetaRevisionGoneError | None = None
        self.last_revision = oldest
        """The revision of the last event handed out (the resume point)."""

    @property
    def closed(self) -> bool:
        """True once closed (by the consumer, the manager, or for falling behind)."""
        return self._closed

    def close(self) -> None:
        """Stop receiving events; the iteration ends once the queued ones are read. Idempotent."""
        if not self._closed:
            self._closed = True
            self._wakeup.set()
            self._on_close(self)

    def offer(self, event: MetaEvent) -> None:
        """Queue ``event`` if it is of a subscribed type (called by the manager)."""
        if self._closed or event.resource_type not in self.types:
            return
        if len(self._events) >= self._limit:
            self._error = MetaRevisionGoneError(revision_token(self.last_revision), self._oldest)
            log.warning("meta subscriber fell behind; dropped", extra={"limit": self._limit})
            self.close()
            return
        self._events.append(event)
        self._wakeup.set()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __aiter__(self) -> AsyncIterator[MetaEvent]:
        return self

    async def __anext__(self) -> MetaEvent:
        while not self._events:
            if self._error is not None:
                raise self._error
            if self._closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        event = self._events.popleft()
        self.last_revision = event.revision
        return event


@dataclass(frozen=True)
class _Change:
    """An object to store (``object`` set) or delete (``object`` None; ``final``: its last state if sent)."""

    key: str
    resource_type: str
    object: Object | None
    final: Object | None
    operation: Operation


@dataclass
class _Pending:
    change: _Change
    encoded: str | None
    done: asyncio.Future[None]


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            "edgetwin_meta_messages",
            "Cloud messages MetaManager handled, by operation, type and result "
            "(applied, unchanged, refused, failed)",
            ["operation", "type", "result"],
            registry=registry,
        )
        self.objects = Gauge(
            "edgetwin_meta_objects", "Objects in the meta store", ["type"], registry=registry
        )
        self.commit_seconds = Histogram(
            "edgetwin_meta_commit_seconds", "Time to commit one batch of meta writes", registry=registry
        )
        self.batch_size = Histogram(
            "edgetwin_meta_commit_batch_size",
            "Changes per meta transaction",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
            registry=registry,
        )


class MetaManager:
    """The ``meta`` store as a supervised module (``start`` / ``wait`` / ``stop``), its queries and its feed.

    ``database`` is edgecore's SQLite file (``database.dataSource``). ``history`` change events are kept
    for watchers that resume; a subscriber more than ``subscriber_limit`` events behind is dropped.
    """

    name = "metamanager"

    def __init__(
        self,
        database: Path,
        *,
        registry: CollectorRegistry | None = None,
        history: int = 1000,
        subscriber_limit: int = 10_000,
        max_batch: int = 256,
    ) -> None:
        self.database = database
        self._history_size = history
        self._subscriber_limit = subscriber_limit
        self._max_batch = max_batch
        self._metrics = _Metrics(registry if registry is not None else CollectorRegistry())
        self._store: MetaSqlite | None = None
        self._objects: dict[str, dict[str, Object]] = {}
        self._revision = 0
        self._oldest = 0
        self._history: deque[MetaEvent] = deque(maxlen=history)
        self._subscribers: set[Subscription] = set()
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    # --- module life ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store and load every object into memory; raises :class:`MetaStoreError`."""
        store = await MetaSqlite.open(self.database)
        try:
            revision, rows = await store.load()
        except BaseException:
            await store.close()
            raise
        self._objects = {resource_type: {} for resource_type in META_TYPES}
        skipped = 0
        for key, resource_type, value in rows:
            try:
                obj = json.loads(value)
            except ValueError:
                obj = None
            if resource_type not in META_TYPES or not isinstance(obj, dict):
                skipped += 1  # e.g. rows of a KubeEdge database for types edgetwin does not serve
                continue
            self._objects[resource_type][key] = obj
        self._store = store
        self._revision = self._oldest = revision
        self._history = deque(maxlen=self._history_size)
        self._queue = asyncio.Queue()
        self._writer = asyncio.create_task(self._run_writer(store), name="meta-writer")
        self._count_objects()
        log.info(
            "meta store loaded",
            extra={
                "db": str(self.database),
                "objects": len(rows) - skipped,
                "skipped": skipped,
                "revision": revision,
            },
        )

    async def wait(self) -> None:
        """Return or raise when the writer stops on its own (a bug; store errors fail the callers only)."""
        if self._writer is not None:
            await asyncio.shield(self._writer)

    async def stop(self) -> None:
        """Commit what is queued, end every subscription and close the store; idempotent."""
        writer, self._writer = self._writer, None
        if writer is not None:
            self._queue.put_nowait(None)
            with contextlib.suppress(Exception):  # its failure was reported through wait()
                await writer
        # Writes still queued after a crashed writer: their callers must not wait forever.
        leftover: builtins.list[_Pending] = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                leftover.append(item)
        _fail(leftover, MetaStoreError(self.database, "write", "MetaManager stopped"))
        for subscription in list(self._subscribers):
            subscription.close()
        store, self._store = self._store, None
        if store is not None:
            await store.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._writer is not None

    # --- the link's side --------------------------------------------------------------------------------

    async def received(self, message: Message) -> None:
        """Apply one cloud message (group ``resource``); returns once the change is durable.

        insert / update / patch store ``content`` (the whole object), delete removes the object. Raises
        :class:`MetaMessageError` for a message that cannot be applied (another operation, an unknown type,
        content that is not the named object) and :class:`MetaStoreError` when the store fails or is
        stopped: the link then does not acknowledge it.
        """
        try:
            change = _change_of(message)
            encoded = None if change.object is None else json.dumps(change.object, separators=(",", ":"))
        except MetaMessageError as exc:
            self._refused(message, exc)
            raise
        except (TypeError, ValueError) as exc:  # content that json cannot write (built in-process)
            error = MetaMessageError(message.resource, message.operation.value, f"content is not JSON: {exc}")
            self._refused(message, error)
            raise error from exc
        if self._writer is None:
            self._count(message, change.resource_type, "failed")
            raise MetaStoreError(self.database, "write", "MetaManager is not running")
        pending = _Pending(change, encoded, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(pending)
        try:
            await pending.done
        except MetaStoreError:
            self._count(message, change.resource_type, "failed")
            raise

    # --- queries ----------------------------------------------------------------------------------------

    @property
    def revision(self) -> int:
        """The store revision: the number of changes ever committed."""
        return self._revision

    def get(self, resource_type: str, namespace: str, name: str) -> Object | None:
        """The stored object, or None. Shared: read it, do not modify it."""
        objects = self._objects_of(resource_type)
        if resource_type in CLUSTER_SCOPED_TYPES:
            namespace = ""
        return objects.get(meta_key(resource_type, namespace, name))

    def list(self, resource_type: str, namespace: str | None = None) -> list[Object]:
        """The stored objects of a type (in one namespace, or all), ordered by namespace and name.

        Shared: read them, do not modify them.
        """
        objects = self._objects_of(resource_type)
        if namespace is None:
            return [objects[key] for key in sorted(objects)]
        prefix = f"{namespace}/"
        return [objects[key] for key in sorted(objects) if key.startswith(prefix)]

    def subscribe(self, types: Iterable[str], *, since: int | None = None) -> Subscription:
        """The changes of ``types`` from now on, or from just after revision ``since``.

        Registered at once: a :meth:`list` in the same step (no ``await`` in between) plus this feed see
        every change exactly once. Raises :class:`MetaRevisionGoneError` if ``since`` is older than the
        kept history or newer than the store, and :class:`MetaStoreError` while the manager is stopped.
        """
        wanted = frozenset(types)
        unknown = wanted - META_TYPES
        if unknown:
            raise ValueError(f"unknown resource types {sorted(unknown)}; known: {sorted(META_TYPES)}")
        if self._writer is None:
            raise MetaStoreError(self.database, "subscribe", "MetaManager is not running")
        backlog: builtins.list[MetaEvent] = []
        if since is not None:
            if not self._oldest <= since <= self._revision:
                raise MetaRevisionGoneError(revision_token(since), self._oldest)
            backlog = [e for e in self._history if e.revision > since and e.resource_type in wanted]
        subscription = Subscription(
            wanted,
            backlog,
            limit=self._subscriber_limit,
            oldest=self._oldest,
            on_close=self._subscribers.discard,
        )
        subscription.last_revision = self._revision if since is None else since
        self._subscribers.add(subscription)
        return subscription

    def revision_at(self, resource_version: str) -> int:
        """The store revision a watch from ``resource_version`` resumes after.

        ``s<n>`` (:func:`revision_token`) is revision ``n``; another string is the cloud resourceVersion of
        an object in the kept history (its first change with that version: resuming replays rather than
        skips). Raises :class:`MetaRevisionGoneError` for anything else (the client lists again).
        """
        if resource_version.startswith(_TOKEN_PREFIX) and resource_version[1:].isdigit():
            revision = int(resource_version[1:])
            if self._oldest <= revision <= self._revision:
                return revision
        else:
            for event in self._history:
                if _resource_version(event.object) == resource_version:
                    return event.revision
        raise MetaRevisionGoneError(resource_version, self._oldest)

    # --- internals --------------------------------------------------------------------------------------

    def _objects_of(self, resource_type: str) -> dict[str, Object]:
        if resource_type not in META_TYPES:
            raise ValueError(f"unknown resource type {resource_type!r}; known: {sorted(META_TYPES)}")
        return self._objects.get(resource_type, {})

    def _refused(self, message: Message, error: MetaMessageError) -> None:
        self._count(message, _type_label(message.resource), "refused")
        log.warning(
            "meta message refused: %s",
            error.reason,
            extra={
                "msg_id": message.msg_id,
                "resource": message.resource,
                "operation": message.operation.value,
            },
        )

    def _count(self, message: Message, resource_type: str, result: str) -> None:
        self._metrics.messages.labels(message.operation.value, resource_type, result).inc()

    def _count_objects(self) -> None:
        for resource_type, objects in self._objects.items():
            self._metrics.objects.labels(resource_type).set(len(objects))

    async def _run_writer(self, store: MetaSqlite) -> None:
        while True:
            first = await self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self._max_batch and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stop = True
                    break
                batch.append(item)
            try:
                await self._commit(store, batch)
            except Exception as exc:
                # A bug here must fail the callers (the link re-sends), not leave them waiting forever.
                _fail(batch, MetaStoreError(self.database, "write", repr(exc)))
                raise
            if stop:
                return

    async def _commit(self, store: MetaSqlite, batch: builtins.list[_Pending]) -> None:
        # Callers cancelled before their turn gave up on the write: leave them out.
        live = [pending for pending in batch if not pending.done.done()]
        # Each change is compared with the state the batch's earlier changes leave, so a re-sent object
        # that is already stored makes no change, no revision and no event.
        view: dict[str, Object | None] = {}
        rows: builtins.list[MetaRow] = []
        events: builtins.list[tuple[_Pending, MetaEvent | None]] = []
        revision = self._revision
        for pending in live:
            change = pending.change
            before = (
                view[change.key]
                if change.key in view
                else self._objects[change.resource_type].get(change.key)
            )
            if before == change.object:  # deleting what is not there, or storing what is
                events.append((pending, None))
                continue
            revision += 1
            if change.object is None:
                assert before is not None
                event = MetaEvent(
                    EventType.DELETED, change.resource_type, change.final or before, before, revision
                )
            else:
                kind = EventType.ADDED if before is None else EventType.MODIFIED
                event = MetaEvent(kind, change.resource_type, change.object, before, revision)
            view[change.key] = change.object
            rows.append(MetaRow(change.key, change.resource_type, pending.encoded))
            events.append((pending, event))
        if rows:
            started = time.perf_counter()
            try:
                await store.commit(rows, revision)
            except MetaStoreError as exc:
                log.exception("meta store commit failed", extra={"db": str(self.database)})
                _fail(live, exc)
                return
            self._metrics.commit_seconds.observe(time.perf_counter() - started)
            self._metrics.batch_size.observe(len(rows))
        for pending, applied in events:
            change = pending.change
            if applied is not None:
                self._publish(change, applied)
            result = "unchanged" if applied is None else "applied"
            self._metrics.messages.labels(change.operation.value, change.resource_type, result).inc()
            if not pending.done.done():
                pending.done.set_result(None)
        self._revision = revision
        if rows:
            self._count_objects()

    def _publish(self, change: _Change, event: MetaEvent) -> None:
        objects = self._objects[change.resource_type]
        if change.object is None:
            objects.pop(change.key, None)
        else:
            objects[change.key] = change.object
        if len(self._history) == self._history.maxlen:
            self._oldest = self._history[0].revision
        self._history.append(event)
        for subscription in list(self._subscribers):  # one that falls behind leaves the set
            subscription.offer(event)


def _fail(batch: Iterable[_Pending], error: MetaStoreError) -> None:
    for pending in batch:
        if not pending.done.done():
            pending.done.set_exception(error)


def _resource_version(obj: Object) -> str | None:
    metadata = obj.get("metadata")
    version = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
    return version if isinstance(version, str) else None


def _type_label(resource: str) -> str:
    """The type of a resource string for the metrics' label: one of :data:`META_TYPES` or ``unknown``."""
    parts = resource.split("/")
    return parts[1] if len(parts) == 3 and parts[1] in META_TYPES else "unknown"


def _change_of(message: Message) -> _Change:
    """Check ``message`` and turn it into a store change; raises :class:`MetaMessageError`."""

    def refuse(reason: str) -> MetaMessageError:
        return MetaMessageError(message.resource, message.operation.value, reason)

    operation = message.operation
    if operation not in _UPSERTS and operation is not Operation.DELETE:
        raise refuse(
            f"operation {operation.value!r} is not one MetaManager applies (insert, update, patch, delete)"
        )
    try:
        ref = ObjectRef.parse(message.resource)
    except MessageFormatError as exc:
        raise refuse(exc.reason) from exc
    if ref.type not in META_TYPES:
        raise refuse(f"type {ref.type!r} is not stored; known types: {', '.join(sorted(META_TYPES))}")
    cluster_scoped = ref.type in CLUSTER_SCOPED_TYPES
    if not cluster_scoped and not ref.namespace:
        raise refuse(f"a {ref.type} needs a namespace")
    namespace = "" if cluster_scoped else ref.namespace
    key = meta_key(ref.type, namespace, ref.name)
    content = message.content
    if operation is Operation.DELETE:
        final = _checked_object(content, ref, refuse) if isinstance(content, dict) and content else None
        return _Change(key, ref.type, None, final, operation)
    if not isinstance(content, dict):
        raise refuse(f"content must be the {ref.type} object, got {type(content).__name__}")
    obj = _checked_object(content, ref, refuse)
    metadata = obj["metadata"]
    if message.header.resource_version and "resourceVersion" not in metadata:
        metadata["resourceVersion"] = message.header.resource_version
    return _Change(key, ref.type, obj, None, operation)


def _checked_object(content: Object, ref: ObjectRef, refuse: Callable[[str], MetaMessageError]) -> Object:
    """A copy of ``content`` (with a fresh ``metadata``) once it is the object ``ref`` names."""
    metadata = content.get("metadata")
    if not isinstance(metadata, dict):
        raise refuse("content has no metadata object")
    if metadata.get("name") != ref.name:
        raise refuse(f"content names {metadata.get('name')!r}, the resource names {ref.name!r}")
    metadata = dict(metadata)
    if ref.type not in CLUSTER_SCOPED_TYPES:
        namespace = metadata.setdefault("namespace", ref.namespace)
        if namespace != ref.namespace:
            raise refuse(f"content is in namespace {namespace!r}, the resource in {ref.namespace!r}")
    version = metadata.get("resourceVersion")
    if version is not None and not isinstance(version, str):
        raise refuse(f"metadata.resourceVersion must be a string, got {version!r}")
    return {**content, "metadata": metadata}
