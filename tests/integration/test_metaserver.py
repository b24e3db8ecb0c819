"""MetaServer over a real MetaManager and SQLite file: plain HTTP, the ``kubernetes`` client and kubectl."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes import client, watch
from prometheus_client import CollectorRegistry

from cloudsync import Operation
from edgecore import MetaManager, MetaServer, MetaServerError
from edgetwin.testing import free_port, wait_for
from supervision import Supervisor
from tests.integration.test_metamanager import pod, resource_message


@dataclass
class Edge:
    """A running MetaManager with its MetaServer, on one registry."""

    meta: MetaManager
    server: MetaServer
    registry: CollectorRegistry

    async def send(self, operation: Operation, resource: str, content: Any = None) -> None:
        await self.meta.received(resource_message(operation, resource, content))


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[Edge]:
    registry = CollectorRegistry()
    meta = MetaManager(tmp_path / "edgecore.db", registry=registry)
    await meta.start()
    server = MetaServer(meta, f"127.0.0.1:{free_port()}", registry=registry)
    try:
        await server.start()
        yield Edge(meta, server, registry)
    finally:
        await server.stop()
        await meta.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def core_api(edge: Edge) -> Iterator[client.CoreV1Api]:
    """The official client pointed at the MetaServer, as a local app would configure it."""
    configuration = client.Configuration(host=edge.server.url)
    with client.ApiClient(configuration) as api_client:
        yield client.CoreV1Api(api_client)


def names(objects: Iterable[Any]) -> list[str | None]:
    """The names of the ``kubernetes`` client's model objects."""
    return [obj.metadata.name if obj.metadata else None for obj in objects]


async def get_json(http: aiohttp.ClientSession, url: str, status: int = 200) -> Any:
    async with http.get(url) as response:
        assert response.status == status, await response.text()
        assert response.content_type == "application/json"
        return await response.json()


SERVICE = {
    "metadata": {"name": "web", "namespace": "default", "resourceVersion": "21", "labels": {"tier": "front"}},
    "spec": {"ports": [{"port": 80, "protocol": "TCP"}], "clusterIP": "10.96.0.10"},
}
NODE = {
    "metadata": {"name": "edge-1", "resourceVersion": "30"},
    "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.10"}]},
}
DEVICE = {
    "metadata": {"name": "thermostat", "namespace": "default", "resourceVersion": "40"},
    "spec": {"deviceModelRef": {"name": "thermostat-model"}, "nodeName": "edge-1"},
}


async def fill(edge: Edge) -> None:
    await edge.send(Operation.INSERT, "default/pod/web", pod("web", version="11", labels={"app": "web"}))
    await edge.send(Operation.INSERT, "default/pod/api", pod("api", version="12", labels={"app": "api"}))
    await edge.send(
        Operation.INSERT, "kube-system/pod/dns", pod("dns", namespace="kube-system", version="13")
    )
    await edge.send(Operation.INSERT, "default/service/web", SERVICE)
    await edge.send(Operation.INSERT, "default/node/edge-1", NODE)
    await edge.send(Operation.INSERT, "default/device/thermostat", DEVICE)
    await edge.send(
        Operation.INSERT, "default/secret/token", {"metadata": {"name": "token"}, "data": {"t": "czM="}}
    )


async def test_lists_and_gets_look_like_the_api_servers(edge: Edge, http: aiohttp.ClientSession) -> None:
    await fill(edge)
    url = edge.server.url

    pods = await get_json(http, f"{url}/api/v1/pods")
    assert (pods["kind"], pods["apiVersion"]) == ("PodList", "v1")
    assert pods["metadata"]["resourceVersion"] == f"s{edge.meta.revision}"
    assert [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in pods["items"]] == [
        ("default", "api"),
        ("default", "web"),
        ("kube-system", "dns"),
    ]
    assert all((p["kind"], p["apiVersion"]) == ("Pod", "v1") for p in pods["items"])

    in_default = await get_json(http, f"{url}/api/v1/namespaces/default/pods")
    assert [p["metadata"]["name"] for p in in_default["items"]] == ["api", "web"]

    web = await get_json(http, f"{url}/api/v1/namespaces/default/pods/web")
    assert (web["kind"], web["metadata"]["resourceVersion"]) == ("Pod", "11")  # the cloud's version

    node = await get_json(http, f"{url}/api/v1/nodes/edge-1")
    assert (node["kind"], node["metadata"]["name"]) == ("Node", "edge-1")

    devices = await get_json(http, f"{url}/apis/devices.kubeedge.io/v1beta1/namespaces/default/devices")
    assert (devices["kind"], devices["apiVersion"]) == ("DeviceList", "devices.kubeedge.io/v1beta1")
    assert devices["items"][0]["kind"] == "Device"
    device = await get_json(
        http, f"{url}/apis/devices.kubeedge.io/v1beta1/namespaces/default/devices/thermostat"
    )
    assert device["spec"]["nodeName"] == "edge-1"

    missing = await get_json(http, f"{url}/api/v1/namespaces/default/pods/nope", status=404)
    assert (missing["kind"], missing["reason"], missing["code"]) == ("Status", "NotFound", 404)
    assert missing["message"] == 'pods "nope" not found'
    assert edge.registry.get_sample_value(
        "edgetwin_metaserver_requests_total", {"resource": "pods", "verb": "get", "code": "404"}
    )


async def test_selectors_filter_lists(edge: Edge, http: aiohttp.ClientSession) -> None:
    await fill(edge)
    await edge.send(
        Operation.INSERT, "default/pod/other-node", {**pod("other-node"), "spec": {"nodeName": "edge-2"}}
    )
    base = f"{edge.server.url}/api/v1/pods"

    async def names(query: str) -> list[str]:
        body = await get_json(http, f"{base}?{query}")
        return [item["metadata"]["name"] for item in body["items"]]

    assert await names("labelSelector=app%3Dweb") == ["web"]
    assert await names("labelSelector=app%21%3Dweb") == ["api", "other-node", "dns"]
    assert await names("labelSelector=app+in+%28api%2Cdns%29") == ["api", "dns"]
    assert await names("fieldSelector=spec.nodeName%3Dedge-2") == ["other-node"]
    assert await names("fieldSelector=metadata.name%3Dapi,metadata.namespace%3Ddefault") == ["api"]
    assert await names("labelSelector=app&fieldSelector=metadata.namespace%21%3Ddefault") == ["dns"]
    bad = await get_json(http, f"{base}?labelSelector=app+%3E+3", status=400)
    assert (bad["kind"], bad["reason"]) == ("Status", "BadRequest")


async def test_the_server_is_read_only_and_never_serves_secrets(
    edge: Edge, http: aiohttp.ClientSession
) -> None:
    await fill(edge)
    url = edge.server.url
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        async with http.request(method, f"{url}/api/v1/namespaces/default/pods/web", json={}) as response:
            assert response.status == 405
            body = await response.json()
            assert body["reason"] == "MethodNotAllowed"
            assert "read-only" in body["message"]
    assert edge.meta.get("pod", "default", "web") is not None

    for path in (
        "/api/v1/secrets",
        "/api/v1/namespaces/default/secrets",
        "/api/v1/namespaces/default/secrets/token",
    ):
        body = await get_json(http, f"{url}{path}", status=403)
        assert (body["kind"], body["reason"]) == ("Status", "Forbidden")
        assert "czM=" not in json.dumps(body)
    resources = await get_json(http, f"{url}/api/v1")
    assert "secrets" not in [r["name"] for r in resources["resources"]]
    assert (await get_json(http, f"{url}/api/v1/deployments", status=404))["reason"] == "NotFound"


async def test_discovery_answers_what_clients_ask_first(edge: Edge, http: aiohttp.ClientSession) -> None:
    url = edge.server.url
    assert (await get_json(http, f"{url}/api"))["versions"] == ["v1"]
    core = await get_json(http, f"{url}/api/v1")
    assert {r["name"] for r in core["resources"]} == {"pods", "services", "endpoints", "configmaps", "nodes"}
    groups = await get_json(http, f"{url}/apis")
    assert [g["name"] for g in groups["groups"]] == ["devices.kubeedge.io"]
    devices = await get_json(http, f"{url}/apis/devices.kubeedge.io/v1beta1")
    assert {r["name"] for r in devices["resources"]} == {"devices", "devicemodels"}
    assert (await get_json(http, f"{url}/version"))["major"] == "1"
    async with http.get(f"{url}/healthz") as response:
        assert (response.status, await response.text()) == (200, "ok")


async def test_the_kubernetes_client_lists_and_reads(edge: Edge, core_api: client.CoreV1Api) -> None:
    await fill(edge)

    services = await asyncio.to_thread(core_api.list_service_for_all_namespaces)
    assert names(services.items) == ["web"]
    assert services.items[0].spec is not None
    assert services.items[0].spec.cluster_ip == "10.96.0.10"
    web = await asyncio.to_thread(core_api.read_namespaced_pod, "web", "default")
    assert web.metadata is not None
    assert web.spec is not None
    assert (web.metadata.resource_version, web.spec.node_name) == ("11", "edge-1")
    nodes = await asyncio.to_thread(core_api.list_node)
    assert names(nodes.items) == ["edge-1"]
    with pytest.raises(client.ApiException) as caught:
        await asyncio.to_thread(core_api.read_namespaced_config_map, "nope", "default")
    assert caught.value.status == 404
    with pytest.raises(client.ApiException) as caught:
        await asyncio.to_thread(core_api.list_secret_for_all_namespaces)
    assert caught.value.status == 403


async def test_the_kubernetes_client_watch_sees_added_modified_deleted(
    edge: Edge, core_api: client.CoreV1Api
) -> None:
    await edge.send(Operation.INSERT, "default/pod/existing", pod("existing"))
    events: list[tuple[str, str, str]] = []

    def follow() -> None:
        stream = watch.Watch()  # type: ignore[no-untyped-call]
        events_in = stream.stream(  # type: ignore[no-untyped-call]
            core_api.list_namespaced_pod, "default", timeout_seconds=20
        )
        for event in events_in:
            obj = event["object"]
            events.append((event["type"], obj.metadata.name, obj.metadata.resource_version))
            if event["type"] == "DELETED":
                stream.stop()  # type: ignore[no-untyped-call]

    follower = asyncio.create_task(asyncio.to_thread(follow))
    await wait_for(lambda: events, what="the ADDED event of the existing pod")
    await edge.send(Operation.INSERT, "default/pod/web", pod("web", version="5"))
    await edge.send(Operation.INSERT, "other/pod/elsewhere", pod("elsewhere", namespace="other"))
    await edge.send(Operation.UPDATE, "default/pod/web", pod("web", version="6"))
    await edge.send(Operation.DELETE, "default/pod/web")
    await asyncio.wait_for(follower, timeout=10)

    assert events == [
        ("ADDED", "existing", "1"),
        ("ADDED", "web", "5"),
        ("MODIFIED", "web", "6"),
        ("DELETED", "web", "6"),
    ]


async def read_events(response: aiohttp.ClientResponse, count: int) -> list[dict[str, Any]]:
    return [json.loads(await asyncio.wait_for(response.content.readline(), 5)) for _ in range(count)]


async def test_a_watch_resumes_from_a_list_or_an_object_version(
    edge: Edge, http: aiohttp.ClientSession
) -> None:
    await fill(edge)
    pods_url = f"{edge.server.url}/api/v1/namespaces/default/pods"
    listed = await get_json(http, pods_url)
    await edge.send(Operation.UPDATE, "default/pod/web", pod("web", version="50", labels={"app": "web"}))
    await edge.send(Operation.UPDATE, "default/pod/api", pod("api", version="51", labels={"app": "api"}))

    since_list = f"{pods_url}?watch=true&resourceVersion={listed['metadata']['resourceVersion']}"
    async with http.get(since_list) as response:
        events = await read_events(response, 2)
    assert [(e["type"], e["object"]["metadata"]["resourceVersion"]) for e in events] == [
        ("MODIFIED", "50"),
        ("MODIFIED", "51"),
    ]
    # The kubernetes client resumes from the last object it saw: the cloud's resourceVersion.
    async with http.get(f"{pods_url}?watch=1&resourceVersion=50") as response:
        assert [e["object"]["metadata"]["name"] for e in await read_events(response, 1)] == ["api"]


async def test_a_watch_from_a_version_the_store_no_longer_holds_gets_410(
    edge: Edge, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{edge.server.url}/api/v1/pods?watch=true&resourceVersion=s999") as response:
        assert response.status == 200
        (event,) = await read_events(response, 1)
        assert await response.content.read() == b""  # and the stream ends
    assert event["type"] == "ERROR"
    assert (event["object"]["code"], event["object"]["reason"]) == (410, "Expired")


async def test_a_watch_with_a_selector_sees_objects_enter_and_leave_it(
    edge: Edge, http: aiohttp.ClientSession
) -> None:
    await fill(edge)
    url = f"{edge.server.url}/api/v1/pods?watch=true&labelSelector=app%3Dweb&allowWatchBookmarks=true"
    async with http.get(url) as response:
        initial, bookmark = await read_events(response, 2)
        await edge.send(Operation.UPDATE, "default/pod/api", pod("api", version="60", labels={"app": "web"}))
        await edge.send(Operation.UPDATE, "default/pod/web", pod("web", version="61", labels={"app": "gone"}))
        await edge.send(
            Operation.UPDATE, "default/pod/web", pod("web", version="62", labels={"app": "still-gone"})
        )
        await edge.send(Operation.DELETE, "default/pod/api")
        changes = await read_events(response, 3)
    assert (initial["type"], initial["object"]["metadata"]["name"]) == ("ADDED", "web")
    assert bookmark["type"] == "BOOKMARK"
    assert bookmark["object"]["metadata"]["resourceVersion"] == f"s{edge.meta.revision - 4}"
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in changes] == [
        ("ADDED", "api"),
        ("DELETED", "web"),
        ("DELETED", "api"),
    ]


async def test_after_a_restart_without_cloud_the_store_still_answers(tmp_path: Path) -> None:
    database = tmp_path / "edgecore.db"
    async with MetaManager(database) as meta:
        await meta.received(resource_message(Operation.INSERT, "default/service/web", SERVICE))
        await meta.received(resource_message(Operation.INSERT, "default/pod/web", pod("web")))

    # A new edgecore process: nothing arrives from the cloud, everything comes from SQLite.
    async with MetaManager(database) as meta:
        server = MetaServer(meta, f"127.0.0.1:{free_port()}")
        await server.start()
        try:
            with client.ApiClient(client.Configuration(host=server.url)) as api_client:
                api = client.CoreV1Api(api_client)
                services = await asyncio.to_thread(api.list_service_for_all_namespaces)
                pods = await asyncio.to_thread(api.list_namespaced_pod, "default")
        finally:
            await server.stop()
    assert names(services.items) == ["web"]
    assert names(pods.items) == ["web"]


async def test_a_watch_ends_when_the_store_stops_and_requests_get_503(
    edge: Edge, http: aiohttp.ClientSession
) -> None:
    await fill(edge)
    async with http.get(f"{edge.server.url}/api/v1/pods?watch=true") as response:
        await read_events(response, 3)
        await edge.meta.stop()
        assert await asyncio.wait_for(response.content.read(), 5) == b""
    body = await get_json(http, f"{edge.server.url}/api/v1/pods", status=503)
    assert body["reason"] == "ServiceUnavailable"


async def test_both_run_as_supervised_modules(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    meta = MetaManager(tmp_path / "edgecore.db")
    server = MetaServer(meta, f"127.0.0.1:{free_port()}")
    supervisor = Supervisor([meta, server], registry=CollectorRegistry())
    await supervisor.start()
    try:
        assert supervisor.healthy
        await meta.received(
            resource_message(Operation.INSERT, "default/configmap/conf", {"metadata": {"name": "conf"}})
        )
        body = await get_json(http, f"{server.url}/api/v1/namespaces/default/configmaps/conf")
        assert body["kind"] == "ConfigMap"
    finally:
        await supervisor.stop()
    assert not meta.running


async def test_a_taken_port_is_a_clear_error(edge: Edge) -> None:
    second = MetaServer(edge.meta, f"127.0.0.1:{edge.server.port}")
    with pytest.raises(MetaServerError, match=str(edge.server.port)):
        await second.start()


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
async def test_kubectl_gets_and_watches(edge: Edge, tmp_path: Path) -> None:
    await fill(edge)
    kubectl = ["kubectl", "--server", edge.server.url, "--cache-dir", str(tmp_path / "kube-cache")]

    listing = await asyncio.create_subprocess_exec(
        *kubectl, "get", "pods", "-A", "-o", "name", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await listing.communicate()
    assert out.decode().split() == ["pod/api", "pod/web", "pod/dns"]

    # kubectl get -w lists, then watches from the list's resourceVersion.
    watcher = await asyncio.create_subprocess_exec(
        *kubectl, "get", "pods", "-w", "-o", "name", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert watcher.stdout is not None
        first = [(await asyncio.wait_for(watcher.stdout.readline(), 10)).decode().split() for _ in range(2)]
        assert sorted(first) == [["pod/api"], ["pod/web"]]
        await edge.send(Operation.INSERT, "default/pod/new", pod("new"))
        line = await asyncio.wait_for(watcher.stdout.readline(), 10)
        assert line.decode().split() == ["pod/new"]
    finally:
        watcher.kill()
        await watcher.wait()
