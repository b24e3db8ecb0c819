"""MetaManager on a real SQLite file: messages in, durable before the call returns, change feed."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from cloudsync import Message, Operation
from devicetwin import TwinStore
from edgecore import (
    EventType,
    MetaEvent,
    MetaManager,
    MetaMessageError,
    MetaRevisionGoneError,
    MetaStoreError,
    Subscription,
)


def resource_message(
    operation: Operation,
    resource: str,
    content: Any = None,
    *,
    version: str = "",
) -> Message:
    """A cloud → edge object message as the EdgeController sends it."""
    return Message.new(
        source="edgecontroller",
        group="resource",
        operation=operation,
        resource=resource,
        content=content,
        resource_version=version,
    )


def pod(name: str, *, namespace: str = "default", version: str = "1", **extra: Any) -> dict[str, Any]:
    """A small v1 Pod for the edge node ``edge-1``."""
    labels = extra.pop("labels", {"app": name})
    return {
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": version, "labels": labels},
        "spec": {"nodeName": "edge-1", "containers": [{"name": "main", "image": "busybox"}]},
        **extra,
    }


def meta_rows(database: Path) -> dict[str, tuple[str, str]]:
    """The ``meta`` table read on a connection of its own: key → (type, value)."""
    with sqlite3.connect(database) as conn:
        return {key: (kind, value) for key, kind, value in conn.execute("SELECT key, type, value FROM meta")}


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def next_event(subscription: Subscription) -> MetaEvent:
    return await asyncio.wait_for(anext(subscription), timeout=5)


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "edgecore.db"


@pytest.fixture
async def meta(database: Path) -> AsyncIterator[MetaManager]:
    async with MetaManager(database, registry=CollectorRegistry()) as manager:
        yield manager


async def test_an_object_is_in_the_meta_table_when_received_returns(
    meta: MetaManager, database: Path
) -> None:
    await meta.received(resource_message(Operation.INSERT, "default/pod/web", pod("web", version="7")))

    kind, value = meta_rows(database)["default/pod/web"]
    assert kind == "pod"
    assert '"resourceVersion":"7"' in value
    stored = meta.get("pod", "default", "web")
    assert stored is not None
    assert stored["metadata"]["resourceVersion"] == "7"
    assert [p["metadata"]["name"] for p in meta.list("pod")] == ["web"]
    assert meta.revision == 1


async def test_update_patch_delete_change_the_store_and_feed_events(
    meta: MetaManager, database: Path
) -> None:
    with meta.subscribe(["configmap"]) as feed:
        cm = {"metadata": {"name": "conf", "namespace": "apps"}, "data": {"a": "1"}}
        await meta.received(resource_message(Operation.INSERT, "apps/configmap/conf", cm, version="3"))
        added = await next_event(feed)
        assert added.type is EventType.ADDED
        # The header's resourceVersion fills in a missing metadata.resourceVersion.
        assert added.object["metadata"]["resourceVersion"] == "3"

        changed = {**cm, "data": {"a": "2"}, "metadata": {**cm["metadata"], "resourceVersion": "4"}}
        await meta.received(resource_message(Operation.PATCH, "apps/configmap/conf", changed))
        modified = await next_event(feed)
        assert (modified.type, modified.object["data"], modified.previous) == (
            EventType.MODIFIED,
            {"a": "2"},
            added.object,
        )

        await meta.received(resource_message(Operation.DELETE, "apps/configmap/conf"))
        deleted = await next_event(feed)
        assert deleted.type is EventType.DELETED
        assert deleted.object["data"] == {"a": "2"}  # the last state
        assert [added.revision, modified.revision, deleted.revision] == [1, 2, 3]

    assert meta.get("configmap", "apps", "conf") is None
    assert "apps/configmap/conf" not in meta_rows(database)


async def test_a_resent_object_or_a_delete_of_nothing_changes_nothing(database: Path) -> None:
    registry = CollectorRegistry()
    async with MetaManager(database, registry=registry) as meta:
        message = resource_message(Operation.UPDATE, "default/pod/web", pod("web"))
        await meta.received(message)
        with meta.subscribe(["pod"]) as feed:
            await meta.received(message)
            await meta.received(resource_message(Operation.DELETE, "default/pod/ghost"))
            await meta.received(
                resource_message(Operation.UPDATE, "default/pod/web", pod("web", version="2"))
            )
            assert (await next_event(feed)).object["metadata"]["resourceVersion"] == "2"
        assert meta.revision == 2
    assert (
        sample(registry, "edgetwin_meta_messages_total", operation="update", type="pod", result="unchanged")
        == 1
    )
    assert (
        sample(registry, "edgetwin_meta_messages_total", operation="delete", type="pod", result="unchanged")
        == 1
    )


async def test_objects_and_revision_survive_a_restart_on_the_same_file(database: Path) -> None:
    async with MetaManager(database) as meta:
        await meta.received(resource_message(Operation.INSERT, "default/pod/web", pod("web")))
        await meta.received(
            resource_message(Operation.INSERT, "default/service/web", {"metadata": {"name": "web"}})
        )
        await meta.received(resource_message(Operation.DELETE, "default/service/web"))
    async with MetaManager(database) as meta:
        assert [p["metadata"]["name"] for p in meta.list("pod", "default")] == ["web"]
        assert meta.list("service") == []
        assert meta.revision == 3
        await meta.received(resource_message(Operation.UPDATE, "default/pod/web", pod("web", version="9")))
        assert meta.revision == 4


async def test_nodes_are_cluster_scoped_whatever_namespace_the_message_names(
    meta: MetaManager, database: Path
) -> None:
    node = {"metadata": {"name": "edge-1", "labels": {"node-role.kubernetes.io/edge": ""}}}
    await meta.received(resource_message(Operation.INSERT, "default/node/edge-1", node, version="5"))

    assert "/node/edge-1" in meta_rows(database)
    stored = meta.get("node", "", "edge-1")
    assert stored is not None
    assert "namespace" not in stored["metadata"]
    assert meta.get("node", "default", "edge-1") == stored


async def test_every_stored_type_is_accepted(meta: MetaManager) -> None:
    kinds = ["pod", "configmap", "secret", "service", "endpoints", "device", "devicemodel", "lease"]
    for kind in kinds:
        await meta.received(
            resource_message(Operation.INSERT, f"default/{kind}/x", {"metadata": {"name": "x"}})
        )
    assert all(meta.get(kind, "default", "x") is not None for kind in kinds)


@pytest.mark.parametrize(
    ("operation", "resource", "content", "reason"),
    [
        (
            Operation.INSERT,
            "default/deployment/web",
            {"metadata": {"name": "web"}},
            "type 'deployment' is not stored",
        ),
        (Operation.INSERT, "default/pod", {"metadata": {"name": "web"}}, "<namespace>/<type>/<name>"),
        (Operation.INSERT, "/pod/web", {"metadata": {"name": "web"}}, "needs a namespace"),
        (Operation.INSERT, "default/pod/web", "not an object", "content must be the pod object"),
        (Operation.UPDATE, "default/pod/web", {"spec": {}}, "no metadata"),
        (Operation.UPDATE, "default/pod/web", {"metadata": {"name": "api"}}, "content names 'api'"),
        (
            Operation.UPDATE,
            "default/pod/web",
            {"metadata": {"name": "web", "namespace": "b"}},
            "namespace 'b'",
        ),
        (Operation.UPDATE, "default/pod/web", {"metadata": {"name": "web", "resourceVersion": 3}}, "string"),
        (Operation.QUERY, "default/pod/web", None, "operation 'query'"),
    ],
)
async def test_bad_messages_are_refused_counted_and_store_nothing(
    database: Path, operation: Operation, resource: str, content: Any, reason: str
) -> None:
    registry = CollectorRegistry()
    async with MetaManager(database, registry=registry) as meta:
        with pytest.raises(MetaMessageError, match=reason) as caught:
            await meta.received(resource_message(operation, resource, content))
        assert caught.value.resource == resource
        assert meta.revision == 0
    assert meta_rows(database) == {}
    refused = [
        s.value
        for metric in registry.collect()
        if metric.name == "edgetwin_meta_messages"
        for s in metric.samples
        if s.name.endswith("_total") and s.labels["result"] == "refused"
    ]
    assert refused == [1.0]


async def test_messages_arriving_together_share_transactions(database: Path) -> None:
    registry = CollectorRegistry()
    async with MetaManager(database, registry=registry) as meta:
        await asyncio.gather(
            *(
                meta.received(resource_message(Operation.INSERT, f"default/pod/p{i}", pod(f"p{i}")))
                for i in range(200)
            )
        )
        assert len(meta.list("pod")) == 200
    assert len(meta_rows(database)) == 200
    assert sample(registry, "edgetwin_meta_commit_batch_size_sum") == 200
    assert sample(registry, "edgetwin_meta_commit_batch_size_count") < 20


async def test_a_watcher_resumes_from_a_revision_and_an_old_one_is_gone(database: Path) -> None:
    async with MetaManager(database, history=3) as meta:
        for version in range(1, 6):
            await meta.received(
                resource_message(Operation.UPDATE, "default/pod/web", pod("web", version=str(version)))
            )
        with meta.subscribe(["pod"], since=3) as feed:
            replayed = [await next_event(feed), await next_event(feed)]
        assert [e.object["metadata"]["resourceVersion"] for e in replayed] == ["4", "5"]
        assert meta.revision_at("s3") == 3
        assert meta.revision_at("4") == 4  # the cloud resourceVersion of an object the feed holds
        with pytest.raises(MetaRevisionGoneError):
            meta.subscribe(["pod"], since=1)
        with pytest.raises(MetaRevisionGoneError):
            meta.revision_at("1")


async def test_a_subscriber_that_falls_behind_is_dropped_with_an_error(database: Path) -> None:
    async with MetaManager(database, subscriber_limit=2) as meta:
        feed = meta.subscribe(["pod"])
        for version in range(1, 5):
            await meta.received(
                resource_message(Operation.UPDATE, "default/pod/web", pod("web", version=str(version)))
            )
        assert [(await next_event(feed)).revision for _ in range(2)] == [1, 2]
        with pytest.raises(MetaRevisionGoneError):
            await next_event(feed)


async def test_stop_ends_subscriptions_and_later_messages_fail(database: Path) -> None:
    meta = MetaManager(database)
    await meta.start()
    feed = meta.subscribe(["pod"])
    await meta.stop()
    with pytest.raises(StopAsyncIteration):
        await next_event(feed)
    with pytest.raises(MetaStoreError, match="not running"):
        await meta.received(resource_message(Operation.INSERT, "default/pod/web", pod("web")))


async def test_shares_the_edge_database_with_the_twin_store(database: Path) -> None:
    async with await TwinStore.open(database), MetaManager(database) as meta:
        await meta.received(resource_message(Operation.INSERT, "default/pod/web", pod("web")))
    async with await TwinStore.open(database) as twins:
        assert await twins.load() == []
    assert list(meta_rows(database)) == ["default/pod/web"]
