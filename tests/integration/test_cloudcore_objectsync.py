"""ObjectSyncStore: the cloud link's acknowledged versions, durable in the Kubernetes API (both backends)."""

from __future__ import annotations

import asyncio
import socket
import uuid
from typing import Any

import pytest
from kubernetes import client as k8s
from prometheus_client import CollectorRegistry

from cloudcore import ObjectSyncStore, install_objectsync_crd, objectsync_name
from cloudcore.errors import KubeUnavailableError
from cloudcore.kube import request
from cloudsync import AckStore

pytestmark = pytest.mark.kube

OBJECTSYNCS = "/apis/reliablesyncs.kubeedge.io/v1alpha1/namespaces/{namespace}/objectsyncs"


@pytest.fixture
async def store(kube_client: k8s.ApiClient, kube_namespace: str) -> ObjectSyncStore:
    await install_objectsync_crd(kube_client)
    return ObjectSyncStore(kube_client, namespace=kube_namespace)


def _node() -> str:
    return f"edge-{uuid.uuid4().hex[:8]}"


async def test_recorded_versions_survive_a_new_store(
    store: ObjectSyncStore, kube_client: k8s.ApiClient, kube_namespace: str
) -> None:
    node = _node()
    await store.record(node, "default/device/thermostat", "101")
    await store.record(node, "default/device/thermostat", "105")
    await store.record(node, "default/devicemodel/thermo-model", "7")

    fresh: AckStore = ObjectSyncStore(kube_client, namespace=kube_namespace)  # the link's interface

    assert await fresh.load() == {
        (node, "default/device/thermostat"): "105",
        (node, "default/devicemodel/thermo-model"): "7",
    }


async def test_objects_look_like_kubeedge_objectsyncs(
    store: ObjectSyncStore, kube_client: k8s.ApiClient, kube_namespace: str
) -> None:
    node = _node()
    await store.record(node, "default/device/thermostat", "42")

    name = objectsync_name(node, "default/device/thermostat")
    found = await request(kube_client, "GET", f"{OBJECTSYNCS.format(namespace=kube_namespace)}/{name}")

    assert name.startswith(f"{node}.")
    assert found["kind"] == "ObjectSync"
    assert found["spec"] == {
        "objectAPIVersion": "devices.kubeedge.io/v1beta1",
        "objectKind": "Device",
        "objectName": "thermostat",
    }
    assert found["status"] == {"objectResourceVersion": "42"}
    assert found["metadata"]["annotations"]["edgetwin.io/resource"] == "default/device/thermostat"


async def test_load_for_one_node(store: ObjectSyncStore) -> None:
    first, second = _node(), _node()
    await store.record(first, "default/pod/web", "3")
    await store.record(second, "default/pod/web", "4")

    assert await store.load(first) == {(first, "default/pod/web"): "3"}
    assert await store.load(second) == {(second, "default/pod/web"): "4"}


async def test_concurrent_records_all_land(store: ObjectSyncStore, kube_client: k8s.ApiClient) -> None:
    node = _node()
    resources = [f"default/device/d{index}" for index in range(12)]

    await asyncio.gather(*(store.record(node, resource, "9") for resource in resources))
    # The same key from many callers at once: applied in call order, the last one wins.
    await asyncio.gather(*(store.record(node, resources[0], str(version)) for version in range(10, 16)))

    loaded = await ObjectSyncStore(kube_client, namespace=store.namespace).load(node)
    assert loaded == {(node, resource): "9" for resource in resources} | {(node, resources[0]): "15"}


async def test_forget_node_deletes_only_that_node(store: ObjectSyncStore, kube_client: k8s.ApiClient) -> None:
    gone, kept = _node(), _node()
    await store.record(gone, "default/device/a", "1")
    await store.record(gone, "device/default/a/twin/cloud_updated", "2")
    await store.record(kept, "default/device/a", "3")

    await store.forget_node(gone)

    assert await ObjectSyncStore(kube_client, namespace=store.namespace).load() == {
        (kept, "default/device/a"): "3"
    }
    # Recording again after forgetting creates the object anew.
    await store.record(gone, "default/device/a", "4")
    assert await store.load(gone) == {(gone, "default/device/a"): "4"}


async def test_long_node_names_and_odd_resources_get_valid_names(store: ObjectSyncStore) -> None:
    node = ".".join(["segment-" + "x" * 50] * 4)  # 235 characters: a valid node name, too long for a label
    resource = "device/default/pump/twin/cloud_updated"

    await store.record(node, resource, "77")

    name = objectsync_name(node, resource)
    assert len(name) <= 253
    assert await store.load(node) == {(node, resource): "77"}
    await store.forget_node(node)
    assert await store.load(node) == {}


async def test_object_deleted_behind_the_store_is_written_again(
    store: ObjectSyncStore, kube_client: k8s.ApiClient
) -> None:
    node = _node()
    await store.record(node, "default/secret/token", "1")
    name = objectsync_name(node, "default/secret/token")
    await request(kube_client, "DELETE", f"{OBJECTSYNCS.format(namespace=store.namespace)}/{name}")

    await store.record(node, "default/secret/token", "2")

    assert await ObjectSyncStore(kube_client, namespace=store.namespace).load(node) == {
        (node, "default/secret/token"): "2"
    }


async def test_missing_namespace_is_created(kube_client: k8s.ApiClient) -> None:
    await install_objectsync_crd(kube_client)
    namespace = f"kubeedge-{uuid.uuid4().hex[:8]}"
    store = ObjectSyncStore(kube_client, namespace=namespace)
    node = _node()

    assert await store.load() == {}
    await store.record(node, "default/configmap/settings", "5")

    answer: dict[str, Any] = await request(kube_client, "GET", f"/api/v1/namespaces/{namespace}")
    assert answer["metadata"]["name"] == namespace
    assert await store.load() == {(node, "default/configmap/settings"): "5"}


async def test_errors_are_translated_and_counted() -> None:
    registry = CollectorRegistry()
    # A port held but not listening: connections are refused.
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        configuration = k8s.Configuration(host=f"http://127.0.0.1:{held.getsockname()[1]}")
        with k8s.ApiClient(configuration) as unreachable:
            store = ObjectSyncStore(unreachable, registry=registry)
            with pytest.raises(KubeUnavailableError, match="Kubernetes API unavailable"):
                await store.record(_node(), "default/device/a", "1")
            with pytest.raises(KubeUnavailableError):
                await store.load()

    assert registry.get_sample_value("edgetwin_objectsync_errors_total", {"operation": "record"}) == 1
    assert registry.get_sample_value("edgetwin_objectsync_errors_total", {"operation": "load"}) == 1
