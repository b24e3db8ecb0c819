"""NodeController against the Kubernetes API (both backends): registration, Ready / NotReady, Lease.

The announcements are the real ones an edge sends (``edgecore.nodeinfo.NodeInfo``); the cloud link is
outside the thing under test, so the test calls the controller's link handler methods the way the link
does.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
from kubernetes import client as k8s
from prometheus_client import CollectorRegistry

from cloudcore import KubeNotFoundError, NodeController
from cloudcore.kube import request
from cloudsync import Message, Operation
from edgecore import EDGE_TAINT, NodeInfo, kubelet_version
from edgetwin.testing import wait_for

pytestmark = pytest.mark.kube

GRACE = 1.0


def _keepalive() -> Message:
    return Message.new(source="edgehub", group="hub", operation=Operation.KEEPALIVE, resource="node")


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def controller(
    kube_client: k8s.ApiClient, registry: CollectorRegistry
) -> AsyncIterator[NodeController]:
    nodes = NodeController(
        kube_client, grace_period=GRACE, lease_duration=1, status_interval=0.5, registry=registry
    )
    await nodes.start()
    yield nodes
    await nodes.stop()


@pytest.fixture
def node() -> str:
    return f"edge-{uuid.uuid4().hex[:8]}"


async def _get_node(api: k8s.ApiClient, name: str) -> dict[str, Any]:
    return await request(api, "GET", f"/api/v1/nodes/{name}")


def _ready(node: dict[str, Any]) -> dict[str, Any]:
    conditions: dict[str, dict[str, Any]] = {c["type"]: c for c in node["status"]["conditions"]}
    return conditions["Ready"]


async def _register(controller: NodeController, info: NodeInfo) -> None:
    await controller.node_connected(info.name)
    await controller.received(info.name, await info.message())


async def test_first_connect_creates_a_ready_edge_node(
    controller: NodeController, kube_client: k8s.ApiClient, kube_api: Any, node: str
) -> None:
    info = NodeInfo(node, labels={"site": "plant-7"}, taints=[EDGE_TAINT])

    await _register(controller, info)

    created = await _get_node(kube_client, node)
    labels = created["metadata"]["labels"]
    assert labels["node-role.kubernetes.io/edge"] == ""
    assert labels["node-role.kubernetes.io/agent"] == ""
    assert labels["site"] == "plant-7"
    # (A real apiserver also adds node.kubernetes.io/not-ready until a node lifecycle controller runs.)
    taints = {(t["key"], t.get("value", ""), t["effect"]) for t in created["spec"]["taints"]}
    assert ("node-role.kubernetes.io/edge", "", "NoSchedule") in taints
    status = created["status"]
    assert status["capacity"]["pods"] == "110"
    assert int(status["capacity"]["cpu"]) >= 1
    assert status["capacity"]["memory"].endswith("Ki")
    assert status["allocatable"] == status["capacity"]
    assert status["nodeInfo"]["kubeletVersion"] == kubelet_version()
    assert "-edgetwin-v" in status["nodeInfo"]["kubeletVersion"]
    assert status["nodeInfo"]["architecture"] in {
        "amd64",
        "arm64",
        "arm",
        "386",
        "ppc64le",
        "s390x",
        "riscv64",
    }
    assert {"type": "Hostname", "address": node} in status["addresses"]
    ready = _ready(created)
    assert (ready["status"], ready["reason"]) == ("True", "KubeletReady")
    # What a user sees: the node and its roles in kubectl.
    kubectl = await asyncio.create_subprocess_exec(
        *kube_api.kubectl("get", "node", node, "--no-headers"), stdout=asyncio.subprocess.PIPE
    )
    output, _ = await kubectl.communicate()
    assert output.decode().split()[:3] == [node, "Ready", "agent,edge"]
    assert node in controller.ready_nodes()


async def test_silent_node_turns_not_ready_then_ready_again(
    controller: NodeController, kube_client: k8s.ApiClient, node: str, registry: CollectorRegistry
) -> None:
    await _register(controller, NodeInfo(node))
    await controller.node_disconnected(node)

    async def condition() -> dict[str, Any]:
        return _ready(await _get_node(kube_client, node))

    async def not_ready() -> dict[str, Any] | None:
        ready = await condition()
        return ready if ready["status"] == "Unknown" else None

    gone = await wait_for(not_ready, timeout=GRACE + 5, what="Ready=Unknown after the grace period")
    assert gone["reason"] == "NodeStatusUnknown"
    assert gone["message"] == "edgecore stopped posting node status"
    # The API shows the patch a moment before the controller has read the answer: wait, do not race it.
    await wait_for(lambda: node not in controller.ready_nodes(), timeout=5, what="the controller counts it")
    # Other tests' nodes share the API (and turn NotReady too): at least this one counts.
    unknown = registry.get_sample_value("edgetwin_nodecontroller_nodes", {"condition": "unknown"})
    assert unknown is not None
    assert unknown >= 1

    await controller.node_connected(node)
    await controller.received(node, _keepalive())

    back = await condition()
    assert (back["status"], back["reason"]) == ("True", "KubeletReady")
    assert back["lastTransitionTime"] >= gone["lastTransitionTime"]


async def test_keepalives_keep_the_node_ready(
    controller: NodeController, kube_client: k8s.ApiClient, node: str, registry: CollectorRegistry
) -> None:
    await _register(controller, NodeInfo(node))
    writes_before = registry.get_sample_value(
        "edgetwin_nodecontroller_status_updates_total", {"status": "True"}
    )

    # Keepalives every 50 ms (the edge's heartbeat) for twice the grace period: Ready all along.
    deadline = time.monotonic() + 2 * GRACE
    while time.monotonic() < deadline:
        await controller.received(node, _keepalive())
        assert _ready(await _get_node(kube_client, node))["status"] == "True"
        await asyncio.sleep(0.05)

    writes = registry.get_sample_value("edgetwin_nodecontroller_status_updates_total", {"status": "True"})
    assert writes is not None
    assert writes_before is not None
    # Rate-limited: at most one status write per status interval (0.5 s), not one per keepalive.
    assert writes - writes_before <= 2 * GRACE / 0.5 + 1


async def test_lease_is_renewed_by_keepalives(
    controller: NodeController, kube_client: k8s.ApiClient, node: str
) -> None:
    await _register(controller, NodeInfo(node))
    path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}"
    first = await request(kube_client, "GET", path)
    assert first["spec"]["holderIdentity"] == node
    assert first["spec"]["leaseDurationSeconds"] == 1
    node_uid = (await _get_node(kube_client, node))["metadata"]["uid"]
    assert first["metadata"]["ownerReferences"][0]["uid"] == node_uid

    async def renewed() -> bool:
        await controller.received(node, _keepalive())
        lease = await request(kube_client, "GET", path)
        return _time(lease["spec"]["renewTime"]) > _time(first["spec"]["renewTime"])

    await wait_for(renewed, timeout=5, interval=0.1, what="a newer renewTime")


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_a_node_cannot_touch_another_node(
    controller: NodeController, kube_client: k8s.ApiClient, node: str, registry: CollectorRegistry
) -> None:
    victim = f"edge-{uuid.uuid4().hex[:8]}"
    impostor = NodeInfo(victim, labels={"owned": "yes"})

    await controller.received(node, await impostor.message())
    # The right resource, but content naming another node.
    forged = (await impostor.message()).with_resource(f"default/node/{node}")
    await controller.received(node, forged)

    missing = await request(
        kube_client, "GET", "/api/v1/nodes", query=[("fieldSelector", f"metadata.name={victim}")]
    )
    assert missing["items"] == []
    with pytest.raises(KubeNotFoundError):
        await _get_node(kube_client, node)
    assert (
        registry.get_sample_value("edgetwin_nodecontroller_refused_messages_total", {"reason": "other_node"})
        == 2
    )


async def test_invalid_announcements_are_refused_not_raised(
    controller: NodeController, kube_client: k8s.ApiClient, node: str, registry: CollectorRegistry
) -> None:
    bad_effect = await NodeInfo(node, taints=[{"key": "a", "effect": "Sometimes"}]).message()
    not_a_node = Message.new(
        source="edged",
        group="resource",
        operation=Operation.INSERT,
        resource=f"default/node/{node}",
        content=[1],
    )
    deletion = Message.new(
        source="edged", group="resource", operation=Operation.DELETE, resource=f"default/node/{node}"
    )

    for message in (bad_effect, not_a_node, deletion):
        await controller.received(node, message)

    assert (
        registry.get_sample_value("edgetwin_nodecontroller_refused_messages_total", {"reason": "invalid"})
        == 2
    )
    assert (
        registry.get_sample_value("edgetwin_nodecontroller_refused_messages_total", {"reason": "unsupported"})
        == 1
    )


async def test_announcing_again_updates_labels_and_keeps_user_labels(
    controller: NodeController, kube_client: k8s.ApiClient, node: str
) -> None:
    await _register(controller, NodeInfo(node, labels={"site": "a"}))
    await request(
        kube_client,
        "PATCH",
        f"/api/v1/nodes/{node}",
        body={"metadata": {"labels": {"team": "ops"}}},
        content_type="application/merge-patch+json",
    )

    await controller.received(node, await NodeInfo(node, labels={"site": "b"}, node_ip="10.1.2.3").message())

    updated = await _get_node(kube_client, node)
    assert updated["metadata"]["labels"]["site"] == "b"
    assert updated["metadata"]["labels"]["team"] == "ops"
    assert {"type": "InternalIP", "address": "10.1.2.3"} in updated["status"]["addresses"]


async def test_restarted_controller_marks_nodes_that_do_not_come_back(
    kube_client: k8s.ApiClient, node: str
) -> None:
    first = NodeController(kube_client, grace_period=60, registry=CollectorRegistry())
    await first.start()
    await _register(first, NodeInfo(node))
    await first.stop()

    second = NodeController(kube_client, grace_period=GRACE, registry=CollectorRegistry())
    await second.start()
    try:
        assert node in second.ready_nodes()  # learnt from the API

        async def not_ready() -> bool:
            status: str = _ready(await _get_node(kube_client, node))["status"]
            return status == "Unknown"

        await wait_for(not_ready, timeout=GRACE + 5, what="NotReady after the new controller's grace period")
    finally:
        await second.stop()


async def test_keepalive_of_an_unregistered_node_is_harmless(
    controller: NodeController, kube_client: k8s.ApiClient, node: str, registry: CollectorRegistry
) -> None:
    await controller.node_connected(node)
    await controller.received(node, _keepalive())

    assert node not in controller.ready_nodes()
    assert registry.get_sample_value("edgetwin_nodecontroller_api_errors_total", {"action": "status"}) == 0
    # Registering afterwards works as usual.
    await controller.received(node, await NodeInfo(node).message())
    assert _ready(await _get_node(kube_client, node))["status"] == "True"
