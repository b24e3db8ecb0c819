"""The Kubernetes API emulator over HTTP: each of kmock's gaps it fills, as a client sees it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import kmock
import pytest

from edgetwin.testing import wait_for
from edgetwin.testing.kubeapi.emulator import KubeEmulator

TOKEN = "unit-test-token"
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
GADGETS = "/apis/example.edgetwin.io/v1/namespaces/default/gadgets"
PODS = "/api/v1/namespaces/default/pods"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
MERGE = "application/merge-patch+json"


def gadget_crd(**version_extra: Any) -> dict[str, Any]:
    """A namespaced CRD with a status subresource and printer columns."""
    version = {
        "name": "v1",
        "served": True,
        "storage": True,
        "subresources": {"status": {}},
        "additionalPrinterColumns": [
            {"name": "Node", "type": "string", "jsonPath": ".spec.nodeName"},
            {"name": "Count", "type": "integer", "jsonPath": ".spec.count"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
        **version_extra,
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.edgetwin.io"},
        "spec": {
            "group": "example.edgetwin.io",
            "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget", "shortNames": ["gd"]},
            "versions": [version],
        },
    }


def gadget(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "example.edgetwin.io/v1",
        "kind": "Gadget",
        "metadata": {"name": name},
        "spec": spec,
    }


class Client:
    """A thin JSON client of the emulator that checks the HTTP status of every answer."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.base_url = base_url

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        status: int = 200,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> Any:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type}
        async with self.session.request(method, path, data=data, params=params, headers=headers) as response:
            answer = await response.json(content_type=None)
            assert response.status == status, answer
            return answer

    async def get(self, path: str, status: int = 200, **params: str) -> Any:
        return await self.call("GET", path, status=status, params=params)

    async def create(self, path: str, body: Any, status: int = 201) -> Any:
        return await self.call("POST", path, body, status=status)

    async def patch(self, path: str, body: Any, content_type: str = MERGE, status: int = 200) -> Any:
        return await self.call("PATCH", path, body, status=status, content_type=content_type)


@contextlib.asynccontextmanager
async def serve(emulator: KubeEmulator) -> AsyncIterator[Client]:
    """Serve ``emulator`` on a free port and yield a client of it; stop both afterwards."""
    async with (
        kmock.Server(emulator) as server,
        aiohttp.ClientSession(
            base_url=str(server.url), headers={"Authorization": f"Bearer {TOKEN}"}
        ) as session,
    ):
        try:
            yield Client(session, str(server.url))
        finally:
            emulator.store.close()


@pytest.fixture
async def api() -> AsyncIterator[Client]:
    """A fresh emulator with the gadgets CRD registered."""
    async with serve(KubeEmulator(token=TOKEN)) as client:
        await client.create(CRD_PATH, gadget_crd())
        yield client


@contextlib.asynccontextmanager
async def watching(client: Client, path: str, **params: str) -> AsyncIterator[list[dict[str, Any]]]:
    """Stream a watch of ``path`` into a list while the block runs."""
    events: list[dict[str, Any]] = []
    async with client.session.get(path, params={"watch": "1", **params}) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"

        async def read() -> None:
            async for line in response.content:
                events.append(json.loads(line))  # noqa: PERF401 - the test reads the list while it grows

        reader = asyncio.create_task(read())
        try:
            yield events
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


async def watch_to_end(client: Client, path: str, **params: str) -> list[dict[str, Any]]:
    """The whole stream of a watch that ends by itself (``timeoutSeconds``)."""
    async with client.session.get(path, params={"watch": "true", **params}) as response:
        return [json.loads(line) async for line in response.content]


# -- create --------------------------------------------------------------------------------------------------


async def test_create_answers_201_and_fills_server_metadata(api: Client) -> None:
    first = await api.create(GADGETS, gadget("g1", count=1))
    second = await api.create(PODS, {"metadata": {"name": "p1"}, "spec": {"containers": []}})

    meta = first["metadata"]
    assert meta["namespace"] == "default"  # from the URL
    assert meta["generation"] == 1
    assert len(meta["uid"]) == 36
    assert meta["creationTimestamp"].endswith("Z")
    # One counter for every resource, as etcd's revision.
    assert int(second["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    assert second["kind"] == "Pod"
    assert second["status"] == {"phase": "Pending"}


async def test_create_refuses_duplicates_missing_namespaces_and_mismatches(api: Client) -> None:
    await api.create(GADGETS, gadget("g1"))
    duplicate = await api.create(GADGETS, gadget("g1"), status=409)
    assert duplicate["reason"] == "AlreadyExists"
    assert duplicate["details"] == {"name": "g1", "group": "example.edgetwin.io", "kind": "gadgets"}

    missing = await api.create(GADGETS.replace("default", "nowhere"), gadget("g2"), status=404)
    assert missing["message"] == 'namespaces "nowhere" not found'

    elsewhere = {**gadget("g3"), "metadata": {"name": "g3", "namespace": "kube-system"}}
    assert (await api.create(GADGETS, elsewhere, status=400))["reason"] == "BadRequest"


async def test_create_drops_the_status_of_a_resource_with_a_status_subresource(api: Client) -> None:
    created = await api.create(GADGETS, {**gadget("g1"), "status": {"state": "made-up"}})
    assert "status" not in created


# -- replace and patch ---------------------------------------------------------------------------------------


async def test_put_replaces_with_optimistic_concurrency(api: Client) -> None:
    created = await api.create(GADGETS, gadget("g1", count=1))
    current = {**created, "spec": {"count": 2}}
    replaced = await api.call("PUT", f"{GADGETS}/g1", current)
    assert replaced["spec"] == {"count": 2}
    assert replaced["metadata"]["generation"] == 2
    assert replaced["metadata"]["uid"] == created["metadata"]["uid"]

    stale = await api.call("PUT", f"{GADGETS}/g1", {**created, "spec": {"count": 3}}, status=409)
    assert stale["reason"] == "Conflict"
    unversioned = gadget("g1", count=4)
    assert (await api.call("PUT", f"{GADGETS}/g1", unversioned, status=422))["reason"] == "Invalid"
    assert await api.call("PUT", f"{GADGETS}/g9", {**current, "metadata": {"name": "g9"}}, status=404)
    assert await api.call("PUT", f"{GADGETS}/g1", {**current, "metadata": {"name": "x"}}, status=400)


async def test_patch_by_content_type(api: Client) -> None:
    await api.create(GADGETS, gadget("g1", count=1, nodeName="n1", list=[1, 2]))

    merged = await api.patch(f"{GADGETS}/g1", {"spec": {"count": 2, "nodeName": None}})
    assert merged["spec"] == {"count": 2, "list": [1, 2]}

    operations = [
        {"op": "replace", "path": "/spec/count", "value": 3},
        {"op": "add", "path": "/spec/list/-", "value": 3},
    ]
    patched = await api.patch(f"{GADGETS}/g1", operations, content_type="application/json-patch+json")
    assert patched["spec"] == {"count": 3, "list": [1, 2, 3]}

    strategic = {"spec": {"count": 4, "$setElementOrder/list": [{"a": 1}]}}
    patched = await api.patch(
        f"{GADGETS}/g1", strategic, content_type="application/strategic-merge-patch+json"
    )
    assert patched["spec"] == {"count": 4, "list": [1, 2, 3]}

    failing_test = [{"op": "test", "path": "/spec/count", "value": 99}]
    await api.patch(f"{GADGETS}/g1", failing_test, content_type="application/json-patch+json", status=422)
    await api.patch(f"{GADGETS}/g1", {"spec": {}}, content_type="application/apply-patch+yaml", status=415)
    dry_run = await api.call("PATCH", f"{GADGETS}/g1", {"spec": {}}, 400, MERGE, {"dryRun": "All"})
    assert "dryRun is not emulated" in dry_run["message"]
    await api.patch(f"{GADGETS}/missing", {"spec": {}}, status=404)


async def test_patch_with_a_stale_resource_version_conflicts(api: Client) -> None:
    created = await api.create(GADGETS, gadget("g1", count=1))
    await api.patch(f"{GADGETS}/g1", {"spec": {"count": 2}})
    stale = {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "spec": {"count": 3}}
    assert (await api.patch(f"{GADGETS}/g1", stale, status=409))["reason"] == "Conflict"


async def test_a_write_that_changes_nothing_is_no_change(api: Client) -> None:
    created = await api.create(GADGETS, gadget("g1", count=1))
    unchanged = await api.patch(f"{GADGETS}/g1", {"spec": {"count": 1}})
    assert unchanged["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    relabelled = await api.patch(f"{GADGETS}/g1", {"metadata": {"labels": {"a": "b"}}})
    assert int(relabelled["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    assert relabelled["metadata"]["generation"] == 1  # metadata changes do not bump the generation


async def test_status_subresource_is_split_from_the_object(api: Client) -> None:
    await api.create(GADGETS, gadget("g1", count=1))

    status_written = await api.patch(
        f"{GADGETS}/g1/status", {"status": {"state": "on"}, "spec": {"count": 9}}
    )
    assert status_written["status"] == {"state": "on"}
    assert status_written["spec"] == {"count": 1}
    assert status_written["metadata"]["generation"] == 1

    object_written = await api.patch(f"{GADGETS}/g1", {"status": {"state": "off"}, "spec": {"count": 2}})
    assert object_written["status"] == {"state": "on"}
    assert object_written["spec"] == {"count": 2}

    replaced = await api.call("PUT", f"{GADGETS}/g1/status", {**object_written, "status": {"state": "idle"}})
    assert replaced["status"] == {"state": "idle"}
    assert (await api.get(f"{GADGETS}/g1/status"))["status"] == {"state": "idle"}


# -- list and selectors --------------------------------------------------------------------------------------


async def test_list_has_kind_api_version_and_resource_version(api: Client) -> None:
    await api.create(GADGETS, gadget("g1"))
    listed = await api.get(GADGETS)
    assert listed["kind"] == "GadgetList"
    assert listed["apiVersion"] == "example.edgetwin.io/v1"
    assert int(listed["metadata"]["resourceVersion"]) >= int(
        listed["items"][0]["metadata"]["resourceVersion"]
    )


async def test_label_and_field_selectors(api: Client) -> None:
    await api.create("/api/v1/namespaces", {"metadata": {"name": "other"}})
    for namespace, name, node, labels in [
        ("default", "p1", "edge-a", {"app": "x"}),
        ("default", "p2", "edge-b", {"app": "y"}),
        ("other", "p3", "edge-a", {}),
    ]:
        pod = {"metadata": {"name": name, "labels": labels}, "spec": {"nodeName": node}}
        await api.create(f"/api/v1/namespaces/{namespace}/pods", pod)

    async def names(path: str, **params: str) -> list[str]:
        return [item["metadata"]["name"] for item in (await api.call("GET", path, params=params))["items"]]

    assert await names(PODS, labelSelector="app=x") == ["p1"]
    assert await names(PODS, labelSelector="app notin (x)") == ["p2"]
    assert await names(PODS, labelSelector="app") == ["p1", "p2"]
    assert await names("/api/v1/pods", fieldSelector="spec.nodeName=edge-a") == ["p1", "p3"]
    assert await names("/api/v1/pods", fieldSelector="spec.nodeName=edge-a,metadata.namespace!=other") == [
        "p1"
    ]
    assert await names(PODS, fieldSelector="metadata.name=p2") == ["p2"]

    refused = await api.get(GADGETS, status=400, fieldSelector="spec.nodeName=edge-a")
    assert refused["message"] == "field label not supported: spec.nodeName"


# -- watch ---------------------------------------------------------------------------------------------------


async def test_namespaced_watch_gets_live_events(api: Client) -> None:
    await api.create(GADGETS, gadget("g0"))
    async with watching(api, GADGETS) as events:
        await wait_for(lambda: len(events) == 1, what="the initial ADDED")
        await api.create(GADGETS, gadget("g1"))
        await api.patch(f"{GADGETS}/g1", {"spec": {"count": 2}})
        await api.call("DELETE", f"{GADGETS}/g1")
        await wait_for(lambda: len(events) == 4, what="three live events")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "g0"),
        ("ADDED", "g1"),
        ("MODIFIED", "g1"),
        ("DELETED", "g1"),
    ]


async def test_watch_resumes_from_a_resource_version(api: Client) -> None:
    created = await api.create(GADGETS, gadget("g1", count=1))
    await api.patch(f"{GADGETS}/g1", {"spec": {"count": 2}})
    await api.create(PODS, {"metadata": {"name": "p1"}})  # another resource: not in this watch

    since = created["metadata"]["resourceVersion"]
    async with watching(api, GADGETS, resourceVersion=since) as events:
        await wait_for(lambda: events, what="the replayed patch")
        await api.patch(f"{GADGETS}/g1", {"spec": {"count": 3}})
        await wait_for(lambda: len(events) == 2, what="the live patch")
    assert [(e["type"], e["object"]["spec"]["count"]) for e in events] == [("MODIFIED", 2), ("MODIFIED", 3)]


async def test_watch_from_a_resource_version_older_than_the_log_is_gone() -> None:
    async with serve(KubeEmulator(token=TOKEN, event_log_size=3)) as api:
        for name in ("a", "b", "c", "d"):
            await api.create("/api/v1/namespaces", {"metadata": {"name": name}})
        events = await watch_to_end(api, "/api/v1/namespaces", resourceVersion="1", timeoutSeconds="1")
        assert [e["type"] for e in events] == ["ERROR"]
        assert events[0]["object"]["code"] == 410
        assert events[0]["object"]["reason"] == "Expired"


async def test_watch_with_a_selector_sees_objects_enter_and_leave_it(api: Client) -> None:
    created = await api.create(GADGETS, gadget("g1"))
    since = created["metadata"]["resourceVersion"]
    await api.patch(f"{GADGETS}/g1", {"metadata": {"labels": {"tier": "gold"}}})
    await api.patch(f"{GADGETS}/g1", {"spec": {"count": 5}})
    await api.patch(f"{GADGETS}/g1", {"metadata": {"labels": {"tier": None}}})

    async with watching(api, GADGETS, resourceVersion=since, labelSelector="tier=gold") as events:
        await wait_for(lambda: len(events) == 3, what="three events")
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]


async def test_watch_ends_when_the_emulator_stops() -> None:
    emulator = KubeEmulator(token=TOKEN)
    async with (
        serve(emulator) as api,
        api.session.get("/api/v1/namespaces", params={"watch": "1"}) as response,
    ):
        initial = [json.loads(await response.content.readline()) for _ in range(4)]
        assert {e["object"]["metadata"]["name"] for e in initial} >= {"default", "kube-system"}
        emulator.store.close()
        assert await response.content.read() == b""


# -- finalizers and namespaces -------------------------------------------------------------------------------


async def test_delete_waits_for_finalizers(api: Client) -> None:
    await api.create(GADGETS, {**gadget("g1"), "metadata": {"name": "g1", "finalizers": ["edgetwin.io/x"]}})
    marked = await api.call("DELETE", f"{GADGETS}/g1")
    assert marked["metadata"]["deletionTimestamp"]
    assert (await api.get(f"{GADGETS}/g1"))["metadata"]["deletionTimestamp"]

    await api.patch(f"{GADGETS}/g1", {"metadata": {"finalizers": None}})
    await api.get(f"{GADGETS}/g1", status=404)


async def test_a_pod_bound_to_a_node_is_deleted_gracefully(api: Client) -> None:
    await api.create(PODS, {"metadata": {"name": "bound"}, "spec": {"nodeName": "edge-1"}})
    await api.create(PODS, {"metadata": {"name": "unbound"}, "spec": {}})

    terminating = await api.call("DELETE", f"{PODS}/bound")
    assert terminating["metadata"]["deletionGracePeriodSeconds"] == 30
    await api.patch(f"{PODS}/bound/status", {"status": {"phase": "Running"}})  # the edge still reports
    assert (await api.get(f"{PODS}/bound"))["metadata"]["deletionTimestamp"]

    await api.call("DELETE", f"{PODS}/bound", {"gracePeriodSeconds": 0})  # as a kubelet, once stopped
    await api.get(f"{PODS}/bound", status=404)
    await api.call("DELETE", f"{PODS}/unbound")
    await api.get(f"{PODS}/unbound", status=404)


async def test_pods_and_nodes_print_the_columns_kubectl_shows(api: Client) -> None:
    node = {
        "metadata": {
            "name": "edge-1",
            "labels": {"node-role.kubernetes.io/edge": "", "node-role.kubernetes.io/agent": ""},
        },
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "nodeInfo": {"kubeletVersion": "v1.28.7-x"},
        },
    }
    await api.create("/api/v1/nodes", node)
    pod = {
        "metadata": {"name": "p"},
        "spec": {"nodeName": "edge-1", "containers": [{"name": "a"}, {"name": "b"}]},
    }
    await api.create(PODS, pod)
    status = {
        "phase": "Running",
        "containerStatuses": [
            {"name": "a", "ready": True, "restartCount": 2},
            {"name": "b", "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "restartCount": 1},
        ],
    }
    await api.patch(f"{PODS}/p/status", {"status": status})

    async def row(path: str) -> dict[str, Any]:
        async with api.session.get(path, headers={"Accept": TABLE}) as response:
            table = await response.json()
        return dict(
            zip((c["name"] for c in table["columnDefinitions"]), table["rows"][0]["cells"], strict=True)
        )

    node_row = await row("/api/v1/nodes")
    assert {k: v for k, v in node_row.items() if k != "Age"} == {
        "Name": "edge-1",
        "Status": "Ready",
        "Roles": "agent,edge",
        "Version": "v1.28.7-x",
    }
    pod_row = await row(PODS)
    assert {k: v for k, v in pod_row.items() if k != "Age"} == {
        "Name": "p",
        "Ready": "1/2",
        "Status": "CrashLoopBackOff",
        "Restarts": 3,
        "IP": "<none>",
        "Node": "edge-1",
    }


async def test_a_deleted_namespace_stays_terminating_and_refuses_new_objects(api: Client) -> None:
    await api.create("/api/v1/namespaces", {"metadata": {"name": "doomed"}})
    await api.call("DELETE", "/api/v1/namespaces/doomed")
    namespace = await api.get("/api/v1/namespaces/doomed")
    assert namespace["status"]["phase"] == "Terminating"
    refused = await api.create("/api/v1/namespaces/doomed/pods", {"metadata": {"name": "p"}}, status=403)
    assert refused["reason"] == "Forbidden"


# -- discovery, OpenAPI and CRDs -----------------------------------------------------------------------------


async def test_core_discovery_and_the_namespaces_collection(api: Client) -> None:
    core = await api.get("/api/v1")
    assert core["groupVersion"] == "v1"
    resources = {resource["name"]: resource for resource in core["resources"]}
    assert resources["namespaces"]["shortNames"] == ["ns"]
    assert "shortNames" not in resources["pods/status"]

    namespaces = await api.get("/api/v1/namespaces")
    assert namespaces["kind"] == "NamespaceList"
    names = {item["metadata"]["name"] for item in namespaces["items"]}
    assert names == {"default", "kube-system", "kube-public", "kube-node-lease"}
    assert (await api.get("/api/v1/namespaces/default"))["status"]["phase"] == "Active"


async def test_a_crd_registers_its_resource_and_becomes_established(api: Client) -> None:
    crd = await api.get(f"{CRD_PATH}/gadgets.example.edgetwin.io")
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions == {"NamesAccepted": "True", "Established": "True"}
    assert crd["status"]["acceptedNames"]["listKind"] == "GadgetList"

    groups = {group["name"]: group for group in (await api.get("/apis"))["groups"]}
    assert groups["example.edgetwin.io"]["preferredVersion"]["groupVersion"] == "example.edgetwin.io/v1"
    resources = (await api.get("/apis/example.edgetwin.io/v1"))["resources"]
    assert [(r["name"], r["kind"], r["namespaced"]) for r in resources] == [
        ("gadgets", "Gadget", True),
        ("gadgets/status", "Gadget", True),
    ]
    assert resources[0]["shortNames"] == ["gd"]

    await api.create(GADGETS, gadget("g1"))
    await api.call("DELETE", f"{CRD_PATH}/gadgets.example.edgetwin.io")
    await api.get("/apis/example.edgetwin.io/v1", status=404)
    await api.get(GADGETS, status=404)


async def test_the_preferred_version_is_the_most_stable_one(api: Client) -> None:
    crd = gadget_crd()
    crd["metadata"]["name"] = "widgets.example.edgetwin.io"
    crd["spec"]["names"] = {"plural": "widgets", "kind": "Widget"}
    crd["spec"]["versions"] = [
        {"name": name, "served": True, "storage": name == "v1"} for name in ("v2alpha1", "v1beta1", "v1")
    ]
    await api.create(CRD_PATH, crd)
    group = await api.get("/apis/example.edgetwin.io")
    assert group["preferredVersion"]["version"] == "v1"
    assert [v["version"] for v in group["versions"]] == ["v1", "v1beta1", "v2alpha1"]
    widget = {"apiVersion": "example.edgetwin.io/v1beta1", "kind": "Widget", "metadata": {"name": "w"}}
    assert (await api.create("/apis/example.edgetwin.io/v1beta1/namespaces/default/widgets", widget))[
        "kind"
    ] == "Widget"


async def test_a_namespace_status_is_its_subresource_not_a_resource_in_it(api: Client) -> None:
    status = await api.get("/api/v1/namespaces/default/status")
    assert status["kind"] == "Namespace"
    assert status["status"]["phase"] == "Active"


async def test_a_crd_named_against_its_group_is_invalid(api: Client) -> None:
    crd = gadget_crd()
    crd["metadata"]["name"] = "widgets.example.edgetwin.io"
    assert (await api.create(CRD_PATH, crd, status=422))["reason"] == "Invalid"


async def test_tables_use_the_printer_columns_also_in_watches_that_time_out(api: Client) -> None:
    await api.create(GADGETS, gadget("g1", nodeName="edge-1", count=3))
    async with api.session.get(GADGETS, headers={"Accept": TABLE}) as response:
        answer = await response.json()
    assert answer["kind"] == "Table"
    assert [c["name"] for c in answer["columnDefinitions"]] == ["Name", "Node", "Count", "Age"]
    cells = answer["rows"][0]["cells"]
    assert cells[:3] == ["g1", "edge-1", 3]
    assert cells[3].endswith("s")  # an age such as "0s"
    assert answer["rows"][0]["object"]["kind"] == "PartialObjectMetadata"

    async with api.session.get(
        GADGETS, params={"watch": "1", "timeoutSeconds": "1"}, headers={"Accept": TABLE}
    ) as response:
        events = [json.loads(line) async for line in response.content]
    assert events[0]["object"]["kind"] == "Table"
    assert events[0]["object"]["rows"][0]["cells"][:3] == ["g1", "edge-1", 3]


async def test_openapi_lets_kubectl_leave_validation_to_the_server(api: Client) -> None:
    root = await api.get("/openapi/v3")
    url = root["paths"]["apis/example.edgetwin.io/v1"]["serverRelativeURL"]
    document = await api.get(url)
    patch = document["paths"]["/apis/example.edgetwin.io/v1/namespaces/{namespace}/gadgets/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {
        "group": "example.edgetwin.io",
        "version": "v1",
        "kind": "Gadget",
    }
    assert "fieldValidation" in [parameter["name"] for parameter in patch["parameters"]]

    # A changed CRD changes the document's hash, so clients that cache by URL fetch it again.
    crd = await api.get(f"{CRD_PATH}/gadgets.example.edgetwin.io")
    crd["spec"]["names"]["kind"] = "Gizmo"
    await api.call("PUT", f"{CRD_PATH}/gadgets.example.edgetwin.io", crd)
    assert (await api.get("/openapi/v3"))["paths"]["apis/example.edgetwin.io/v1"]["serverRelativeURL"] != url

    protobuf = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
    async with api.session.get("/openapi/v2", headers={"Accept": protobuf}) as response:
        assert await response.read() == b"\n\x032.0"
        assert (
            response.headers["Content-Type"] == "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
        )


# -- authentication ------------------------------------------------------------------------------------------


async def test_a_wrong_token_is_refused_and_none_is_served(api: Client) -> None:
    async with api.session.get("/api/v1/namespaces", headers={"Authorization": "Bearer wrong"}) as response:
        assert response.status == 401
    async with (
        aiohttp.ClientSession(base_url=api.base_url) as anonymous,
        anonymous.get("/api/v1/namespaces") as response,
    ):
        assert response.status == 200
