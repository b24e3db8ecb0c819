"""The EdgeController against a real Kubernetes API (kube-apiserver + etcd, and the emulator).

The cloud link is outside the thing under test: a recorder takes what the controller hands to
``CloudLink.send``, and the edge's messages are handed to ``received`` as the link would.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes import client as k8s
from prometheus_client import CollectorRegistry

from cloudcore import EDGE_ROLE_LABEL, EdgeController, is_pod_resource
from cloudcore.edge import NOT_TOLERATED
from cloudcore.watch import watch
from cloudsync import Message, Operation
from edgetwin.testing import wait_for
from edgetwin.testing.kubeapi import KubeApi

pytestmark = pytest.mark.kube

TOLERATION = {"key": EDGE_ROLE_LABEL, "operator": "Exists", "effect": "NoSchedule"}


@dataclass
class RecordingLink:
    """Stands in for ``CloudLink.send``: records ``(node, message)``."""

    sent: list[tuple[str, Message]] = field(default_factory=list)

    async def send(self, node: str, message: Message) -> None:
        self.sent.append((node, message))

    def to(self, node: str, resource: str | None = None) -> list[Message]:
        return [m for to, m in self.sent if to == node and resource in (None, m.resource)]

    def operations(self, node: str, resource: str) -> list[Operation]:
        return [message.operation for message in self.to(node, resource)]

    def resources(self, node: str) -> set[str]:
        return {message.resource for message in self.to(node)}


@dataclass
class Cloud:
    controller: EdgeController
    link: RecordingLink
    core: k8s.CoreV1Api
    namespace: str
    registry: CollectorRegistry
    node_a: str
    node_b: str

    def res(self, kind: str, name: str) -> str:
        return f"{self.namespace}/{kind}/{name}"

    async def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(function, *args, **kwargs)

    async def configmap(self, name: str, data: dict[str, str]) -> Any:
        body = {"metadata": {"name": name}, "data": data}
        return await self.call(self.core.create_namespaced_config_map, self.namespace, body)

    async def secret(self, name: str, data: dict[str, str]) -> Any:
        # ``data`` (base64), not ``stringData``: the emulator does not convert stringData.
        encoded = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
        body = {"metadata": {"name": name}, "data": encoded}
        return await self.call(self.core.create_namespaced_secret, self.namespace, body)

    async def pod(
        self,
        name: str,
        node: str,
        *,
        configmap: str = "",
        secret: str = "",
        tolerate: bool = True,
    ) -> Any:
        container: dict[str, Any] = {"name": "main", "image": "busybox:local", "command": ["sleep", "3600"]}
        spec: dict[str, Any] = {"nodeName": node, "containers": [container], "volumes": []}
        if configmap:
            spec["volumes"].append({"name": "config", "configMap": {"name": configmap}})
            container["volumeMounts"] = [{"name": "config", "mountPath": "/etc/config"}]
        if secret:
            ref = {"name": secret, "key": "password"}
            container["env"] = [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": ref}}]
        if tolerate:
            spec["tolerations"] = [TOLERATION]
        body = {"metadata": {"name": name}, "spec": spec}
        return await self.call(self.core.create_namespaced_pod, self.namespace, body)

    async def read_pod(self, name: str) -> Any:
        return await self.call(self.core.read_namespaced_pod, name, self.namespace)

    async def pod_exists(self, name: str) -> bool:
        try:
            await self.read_pod(name)
        except k8s.ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def force_delete(self, name: str) -> None:
        await self.call(self.core.delete_namespaced_pod, name, self.namespace, grace_period_seconds=0)

    async def from_edge(self, node: str, operation: Operation, resource: str, content: Any) -> None:
        message = Message.new(
            source="edged", group="resource", operation=operation, resource=resource, content=content
        )
        assert is_pod_resource(message.resource)
        await self.controller.received(node, message)

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


async def _edge_node(core: k8s.CoreV1Api, name: str, *, tainted: bool = False) -> None:
    body: dict[str, Any] = {"metadata": {"name": name, "labels": {EDGE_ROLE_LABEL: ""}}}
    if tainted:
        body["spec"] = {"taints": [{"key": EDGE_ROLE_LABEL, "effect": "NoSchedule"}]}
    await asyncio.to_thread(core.create_node, body)  # type: ignore[arg-type]  # the client takes JSON dicts too


@pytest.fixture
async def cloud(kube_api: KubeApi, kube_namespace: str, kube_client: k8s.ApiClient) -> AsyncIterator[Cloud]:
    core = k8s.CoreV1Api(kube_client)
    node_a, node_b = f"{kube_namespace}-a", f"{kube_namespace}-b"
    await _edge_node(core, node_a)
    await _edge_node(core, node_b, tainted=True)
    link = RecordingLink()
    registry = CollectorRegistry()
    # One-second watches: the tests also cross watch renewals (resumed from the last resourceVersion).
    controller = EdgeController(
        kube_client, link.send, registry=registry, watch_timeout=1, namespace=kube_namespace
    )
    await controller.start()
    try:
        yield Cloud(controller, link, core, kube_namespace, registry, node_a, node_b)
    finally:
        await controller.stop()
        for node in (node_a, node_b):
            await asyncio.to_thread(core.delete_node, node)


def _versions_unique(link: RecordingLink) -> bool:
    counts = Counter((node, message.resource, message.header.resource_version) for node, message in link.sent)
    return all(count == 1 for count in counts.values())


async def test_a_pod_and_what_it_names_reach_its_node_only(cloud: Cloud) -> None:
    config = await cloud.configmap("app-config", {"app.conf": "level=1"})
    secret = await cloud.secret("app-secret", {"password": "s3cret"})
    await cloud.secret("unused-secret", {"password": "nobody"})
    service = await cloud.call(
        cloud.core.create_namespaced_service,
        cloud.namespace,
        {"metadata": {"name": "app"}, "spec": {"ports": [{"port": 80}], "selector": {"app": "x"}}},
    )
    pod_a = await cloud.pod("app-a", cloud.node_a, configmap="app-config", secret="app-secret")
    await cloud.pod("app-b", cloud.node_b)

    pod_resource = cloud.res("pod", "app-a")
    await wait_for(lambda: cloud.link.to(cloud.node_a, pod_resource), 10.0, what="the pod sent to node A")
    await wait_for(lambda: cloud.link.to(cloud.node_b, cloud.res("pod", "app-b")), 10.0, what="B's pod")

    on_a = [message.resource for message in cloud.link.to(cloud.node_a)]
    assert set(on_a) == {
        cloud.res("configmap", "app-config"),
        cloud.res("secret", "app-secret"),
        cloud.res("service", "app"),
        pod_resource,
    }
    assert on_a[-1] == pod_resource, "what a pod names arrives before the pod"
    assert cloud.link.resources(cloud.node_b) == {cloud.res("pod", "app-b"), cloud.res("service", "app")}
    assert all(node in (cloud.node_a, cloud.node_b) for node, _ in cloud.link.sent)

    [pod_message] = cloud.link.to(cloud.node_a, pod_resource)
    assert pod_message.operation is Operation.INSERT
    assert pod_message.route.source == "edgecontroller"
    assert pod_message.route.group == "resource"
    assert pod_message.header.resource_version == pod_a.metadata.resource_version
    assert pod_message.content["kind"] == "Pod"
    assert pod_message.content["apiVersion"] == "v1"
    assert pod_message.content["spec"]["nodeName"] == cloud.node_a
    assert "managedFields" not in pod_message.content["metadata"]
    [secret_message] = cloud.link.to(cloud.node_a, cloud.res("secret", "app-secret"))
    # A secret a pod brings carries the pod's version when newer (a later re-insert must outrank a delete).
    assert secret_message.content["metadata"]["resourceVersion"] == secret.metadata.resource_version
    assert secret_message.header.resource_version == pod_a.metadata.resource_version
    assert secret_message.content["kind"] == "Secret"
    assert secret_message.content["data"] == {"password": "czNjcmV0"}
    [config_message] = cloud.link.to(cloud.node_a, cloud.res("configmap", "app-config"))
    assert config_message.content["metadata"]["resourceVersion"] == config.metadata.resource_version
    [service_message] = cloud.link.to(cloud.node_a, cloud.res("service", "app"))
    assert int(service_message.header.resource_version) >= int(service.metadata.resource_version)
    assert cloud.metric("edgetwin_edgecontroller_messages_sent_total", type="pod", operation="insert") == 2


async def test_a_configmap_change_reaches_the_node_that_uses_it(cloud: Cloud) -> None:
    await cloud.configmap("app-config", {"app.conf": "level=1"})
    await cloud.pod("app-a", cloud.node_a, configmap="app-config")
    await cloud.pod("app-b", cloud.node_b)
    resource = cloud.res("configmap", "app-config")
    await wait_for(lambda: cloud.link.to(cloud.node_a, resource), 10.0, what="the configmap on A")

    changed = await cloud.call(
        cloud.core.patch_namespaced_config_map,
        "app-config",
        cloud.namespace,
        {"data": {"app.conf": "level=2"}},
    )

    await wait_for(lambda: len(cloud.link.to(cloud.node_a, resource)) == 2, 10.0, what="the update on A")
    update = cloud.link.to(cloud.node_a, resource)[-1]
    assert update.operation is Operation.UPDATE
    assert update.content["data"] == {"app.conf": "level=2"}
    assert update.header.resource_version == changed.metadata.resource_version
    assert resource not in cloud.link.resources(cloud.node_b)


async def test_a_deleted_pod_is_deleted_on_its_node_with_the_secret_only_it_used(cloud: Cloud) -> None:
    await cloud.configmap("shared", {"k": "v"})
    await cloud.secret("only-first", {"password": "p"})
    await cloud.pod("first", cloud.node_a, configmap="shared", secret="only-first")
    await cloud.pod("second", cloud.node_a, configmap="shared")
    await wait_for(
        lambda: cloud.link.to(cloud.node_a, cloud.res("pod", "second")), 10.0, what="both pods on A"
    )

    await cloud.force_delete("first")

    secret = cloud.res("secret", "only-first")
    await wait_for(lambda: len(cloud.link.to(cloud.node_a, secret)) == 2, 10.0, what="the secret deleted")
    # A real apiserver marks the pod (deletionTimestamp, grace 0) before it removes it: an update may come.
    first = cloud.link.operations(cloud.node_a, cloud.res("pod", "first"))
    assert (first[0], first[-1]) == (Operation.INSERT, Operation.DELETE)
    assert cloud.link.operations(cloud.node_a, secret) == [Operation.INSERT, Operation.DELETE]
    assert cloud.link.operations(cloud.node_a, cloud.res("configmap", "shared")) == [Operation.INSERT]
    resources = [message.resource for message in cloud.link.to(cloud.node_a)]
    assert resources.index(cloud.res("pod", "first")) < len(resources) - 1
    assert resources[-1] == secret, "the pod is deleted before the secret it used"
    insert, delete = cloud.link.to(cloud.node_a, secret)
    assert int(delete.header.resource_version) > int(insert.header.resource_version)
    assert delete.content["metadata"]["name"] == "only-first"
    assert "data" not in delete.content

    # The secret is named again: it goes back to the node, with a version newer than the delete's.
    await cloud.pod("third", cloud.node_a, secret="only-first")
    await wait_for(lambda: len(cloud.link.to(cloud.node_a, secret)) == 3, 10.0, what="the secret again")
    again = cloud.link.to(cloud.node_a, secret)[-1]
    assert again.operation is Operation.INSERT
    assert int(again.header.resource_version) > int(delete.header.resource_version)
    assert _versions_unique(cloud.link)


async def test_a_graceful_deletion_ends_when_the_node_reports_the_pod_stopped(cloud: Cloud) -> None:
    await cloud.pod("app", cloud.node_a)
    resource = cloud.res("pod", "app")
    await wait_for(lambda: cloud.link.to(cloud.node_a, resource), 10.0, what="the pod on A")

    await cloud.call(cloud.core.delete_namespaced_pod, "app", cloud.namespace, grace_period_seconds=30)

    await wait_for(lambda: len(cloud.link.to(cloud.node_a, resource)) == 2, 10.0, what="the deletion sent")
    update = cloud.link.to(cloud.node_a, resource)[-1]
    assert update.operation is Operation.UPDATE
    assert update.content["metadata"]["deletionTimestamp"]
    assert await cloud.pod_exists("app"), "the API waits for the node"

    await cloud.from_edge(
        cloud.node_a, Operation.DELETE, resource, {"metadata": {"uid": update.content["metadata"]["uid"]}}
    )

    assert not await cloud.pod_exists("app")
    await wait_for(
        lambda: cloud.link.operations(cloud.node_a, resource)[-1] is Operation.DELETE,
        10.0,
        what="the delete sent",
    )
    assert cloud.metric("edgetwin_edgecontroller_pods_deleted_total") == 1


async def test_a_node_cannot_delete_a_pod_that_is_not_being_deleted(cloud: Cloud) -> None:
    await cloud.pod("app", cloud.node_a)
    await wait_for(lambda: cloud.link.to(cloud.node_a, cloud.res("pod", "app")), 10.0, what="the pod on A")

    await cloud.from_edge(cloud.node_a, Operation.DELETE, cloud.res("pod", "app"), None)

    assert await cloud.pod_exists("app")
    assert cloud.metric("edgetwin_edgecontroller_refused_messages_total", reason="not_terminating") == 1


def _running_status(image: str = "busybox:local") -> dict[str, Any]:
    return {
        "phase": "Running",
        "podIP": "10.88.0.7",
        "startTime": "2024-01-01T00:00:00Z",
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2024-01-01T00:00:01Z"}],
        "containerStatuses": [
            {
                "name": "main",
                "ready": True,
                "restartCount": 0,
                "image": image,
                "imageID": "sha256:0123",
                "containerID": "containerd://abc",
                "state": {"running": {"startedAt": "2024-01-01T00:00:01Z"}},
            }
        ],
    }


async def test_status_from_the_node_is_patched_into_the_pod(cloud: Cloud) -> None:
    created = await cloud.pod("app", cloud.node_a)
    resource = cloud.res("pod", "app")
    await wait_for(lambda: cloud.link.to(cloud.node_a, resource), 10.0, what="the pod on A")

    report = {"UID": created.metadata.uid, "Name": "app", "Status": _running_status()}
    await cloud.from_edge(cloud.node_a, Operation.UPDATE, cloud.res("podstatus", "app"), report)

    pod = await cloud.read_pod("app")
    assert pod.status.phase == "Running"
    assert pod.status.pod_ip == "10.88.0.7"
    [container] = pod.status.container_statuses
    assert container.ready is True
    assert container.state.running is not None
    assert cloud.metric("edgetwin_edgecontroller_pod_status_patches_total") == 1
    # The status change is the edge's own: it is not echoed back to the node. A label change is sent.
    await cloud.call(
        cloud.core.patch_namespaced_pod, "app", cloud.namespace, {"metadata": {"labels": {"tier": "edge"}}}
    )
    await wait_for(lambda: len(cloud.link.to(cloud.node_a, resource)) == 2, 10.0, what="the label change")
    assert cloud.link.to(cloud.node_a, resource)[-1].content["metadata"]["labels"] == {"tier": "edge"}
    assert cloud.link.to(cloud.node_a, resource)[-1].content["status"]["phase"] == "Running"


async def test_a_node_cannot_report_the_status_of_another_nodes_pod(cloud: Cloud) -> None:
    created = await cloud.pod("app-b", cloud.node_b)
    await wait_for(lambda: cloud.link.to(cloud.node_b), 10.0, what="the pod on B")

    report = {"UID": created.metadata.uid, "Name": "app-b", "Status": _running_status()}
    await cloud.from_edge(cloud.node_a, Operation.UPDATE, cloud.res("podstatus", "app-b"), report)
    await cloud.from_edge(cloud.node_a, Operation.DELETE, cloud.res("pod", "app-b"), None)

    pod = await cloud.read_pod("app-b")
    assert pod.status.phase == "Pending"
    assert pod.metadata.deletion_timestamp is None
    assert cloud.metric("edgetwin_edgecontroller_refused_messages_total", reason="other_node") == 2
    assert cloud.metric("edgetwin_edgecontroller_pod_status_patches_total") == 0


async def test_a_report_about_a_pod_the_api_does_not_have_deletes_it_on_the_node(
    cloud: Cloud, caplog: pytest.LogCaptureFixture
) -> None:
    report = {"UID": "0000-gone", "Name": "ghost", "Status": _running_status()}

    with caplog.at_level(logging.INFO, logger="cloudcore.edge.controller"):
        await cloud.from_edge(cloud.node_a, Operation.UPDATE, cloud.res("podstatus", "ghost"), report)
    # The usual race after a deletion: said once, as information, not as a warning.
    [said] = [record for record in caplog.records if "the API has no such pod" in record.getMessage()]
    assert said.levelno == logging.INFO

    [delete] = cloud.link.to(cloud.node_a, cloud.res("pod", "ghost"))
    assert delete.operation is Operation.DELETE
    assert delete.content["metadata"]["uid"] == "0000-gone"
    assert cloud.metric("edgetwin_edgecontroller_refused_messages_total", reason="stale") == 1


async def test_a_relist_sends_only_what_changed_and_nothing_twice(cloud: Cloud) -> None:
    await cloud.configmap("app-config", {"app.conf": "level=1"})
    await cloud.secret("app-secret", {"password": "p"})
    await cloud.pod("stays", cloud.node_a, configmap="app-config")
    await cloud.pod("goes", cloud.node_a, secret="app-secret")
    await wait_for(lambda: len(cloud.link.to(cloud.node_a)) == 4, 10.0, what="four objects on A")
    before = len(cloud.link.sent)

    # The controller is away (its watches broken, as after a 410 Gone) while things change.
    await cloud.controller.stop()
    await cloud.call(
        cloud.core.patch_namespaced_config_map,
        "app-config",
        cloud.namespace,
        {"data": {"app.conf": "level=2"}},
    )
    await cloud.force_delete("goes")
    await cloud.pod("new", cloud.node_a)
    await cloud.controller.start()

    changes = [(m.resource, m.operation) for m in cloud.link.to(cloud.node_a)][before:]
    assert sorted(changes) == sorted(
        [
            (cloud.res("configmap", "app-config"), Operation.UPDATE),
            (cloud.res("pod", "goes"), Operation.DELETE),
            (cloud.res("secret", "app-secret"), Operation.DELETE),
            (cloud.res("pod", "new"), Operation.INSERT),
        ]
    )
    assert _versions_unique(cloud.link)
    assert cloud.link.to(cloud.node_b) == []


async def test_an_untolerated_pod_on_a_tainted_node_is_not_sent(cloud: Cloud) -> None:
    await cloud.secret("app-secret", {"password": "p"})
    await cloud.pod("untolerated", cloud.node_b, secret="app-secret", tolerate=False)
    await cloud.pod("tolerated", cloud.node_b)
    await wait_for(lambda: cloud.link.to(cloud.node_b), 10.0, what="the tolerated pod on B")

    async def refused() -> Any:
        conditions = (await cloud.read_pod("untolerated")).status.conditions or []
        return next((c for c in conditions if c.type == "PodScheduled"), None)

    condition = await wait_for(refused, 10.0, what="the PodScheduled condition")
    assert condition.status == "False"
    assert condition.reason == NOT_TOLERATED
    assert EDGE_ROLE_LABEL in condition.message
    events = await cloud.call(
        cloud.core.list_namespaced_event, cloud.namespace, field_selector="involvedObject.name=untolerated"
    )
    assert [(event.type, event.reason) for event in events.items] == [("Warning", NOT_TOLERATED)]
    assert cloud.link.resources(cloud.node_b) == {cloud.res("pod", "tolerated")}
    assert cloud.metric("edgetwin_edgecontroller_refused_pods_total") == 1

    # Without the taint, the pod goes to its node (with the secret it names).
    await cloud.call(cloud.core.patch_node, cloud.node_b, {"spec": {"taints": None}})

    untolerated = cloud.res("pod", "untolerated")
    await wait_for(lambda: cloud.link.to(cloud.node_b, untolerated), 10.0, what="the pod sent at last")
    assert cloud.res("secret", "app-secret") in cloud.link.resources(cloud.node_b)
    assert cloud.metric("edgetwin_edgecontroller_refused_pods_total") == 1


async def test_a_watch_the_server_ends_closes_cleanly(cloud: Cloud, kube_client: k8s.ApiClient) -> None:
    listed = await cloud.call(cloud.core.list_namespaced_pod, cloud.namespace)
    path = f"/api/v1/namespaces/{cloud.namespace}/pods"

    async with watch(kube_client, path, listed.metadata.resource_version, timeout_seconds=1) as events:
        seen = [kind async for kind, _ in events]

    assert seen in ([], ["BOOKMARK"])
