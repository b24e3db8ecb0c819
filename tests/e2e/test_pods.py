"""Issue 10 end to end: Pods from the Kubernetes API run on edge nodes in containerd, and report back.

cloudcore runs in-process against the Kubernetes API fixture (both backends); each edge is joined with
``edgetwin join`` (its own certificate) and runs EdgeCore with Edged on the session's containerd (the busybox
image imported into it, pods under the fixture's cgroup) and MetaServer on a free port. Everything the user
sees is checked where the user sees it: the Pod in the API, the container in containerd, the log file under
``rootDirectory``, MetaServer through the ``kubernetes`` client, the edge's SQLite file.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes import client as k8s
from kubernetes import watch

from cloudcore import EDGE_ROLE_LABEL, CloudCore, CloudCoreConfig, KubeNotFoundError
from cloudcore.edge import NOT_TOLERATED
from cloudcore.kube import MERGE_PATCH, request
from edgecore import EdgeCore, EdgeCoreConfig, dump_config
from edgecore.edged import (
    POD_UID_LABEL,
    ContainerInfo,
    ContainerRuntime,
    ContainerState,
    container_log_path,
    pod_log_dir,
)
from edgetwin.testing import free_port, wait_for
from edgetwin.testing.cluster import cloud_config, join_edge, run_pods
from edgetwin.testing.containerd import BUSYBOX_IMAGE, Containerd

pytestmark = pytest.mark.kube

GRACE = 5.0
TIMEOUT = 30.0
API_POLL = 0.1
EDGETWIN = Path(sys.executable).with_name("edgetwin")
TOLERATION = {"key": EDGE_ROLE_LABEL, "operator": "Exists", "effect": "NoSchedule"}
# Exits at once on SIGTERM (a shell as pid 1 ignores it otherwise), so deletion does not wait for the grace.
LOOP = "trap 'exit 0' TERM; while true; do sleep 1; done"

Json = dict[str, Any]


class Cloud:
    """cloudcore on one configuration, stopped and started again as a restarted process would be."""

    def __init__(self, config: CloudCoreConfig, api: k8s.ApiClient) -> None:
        self.config = config
        self.api = api
        self._core: CloudCore | None = None

    @property
    def core(self) -> CloudCore:
        assert self._core is not None, "cloudcore is not running"
        return self._core

    async def start(self) -> None:
        core = CloudCore(self.config, self.api)
        await core.start()
        self._core = core

    async def stop(self) -> None:
        core, self._core = self._core, None
        if core is not None:
            await core.stop()


@pytest.fixture
async def cloud(kube_client: k8s.ApiClient, kube_namespace: str) -> AsyncIterator[Cloud]:
    running = Cloud(cloud_config(kube_namespace, grace_period=GRACE, keepalive=5), kube_client)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def edge_config(
    cloud: Cloud, containerd: Containerd, node: str, workdir: Path, *, edged: bool = True
) -> EdgeCoreConfig:
    """``edgetwin join`` for ``node`` (with the edge taint), then Edged on the test containerd (unless not
    ``edged``) and MetaServer on a free port."""
    config = await asyncio.to_thread(join_edge, cloud.core, node, workdir, with_edge_taint=True)
    run_pods(config, containerd.endpoint, workdir / "edged", cgroup_root=containerd.cgroup_parent)
    config.modules.edged.enable = edged
    return config


StartEdge = Callable[..., Awaitable[EdgeCore]]


@pytest.fixture
async def start_edge(
    cloud: Cloud, containerd: Containerd, cri_runtime: ContainerRuntime, tmp_path: Path
) -> AsyncIterator[StartEdge]:
    """``await start_edge(node, edged=True)``: a joined EdgeCore, stopped after the test (its pods are then
    removed by ``cri_runtime``, which also imported the busybox image)."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(node: str, *, edged: bool = True) -> EdgeCore:
            config = await edge_config(cloud, containerd, node, tmp_path / node, edged=edged)
            return await stack.enter_async_context(EdgeCore(config))

        yield start


def node_name() -> str:
    return f"edge-{uuid.uuid4().hex[:8]}"


def pod_manifest(
    name: str, node: str, script: str = LOOP, *, tolerate: bool = True, **container: Any
) -> Json:
    volumes = container.pop("volumes", [])
    spec: Json = {
        "nodeName": node,
        "terminationGracePeriodSeconds": 5,
        "containers": [
            {"name": "main", "image": BUSYBOX_IMAGE, "command": ["sh", "-c", script], **container}
        ],
        "volumes": volumes,
    }
    if tolerate:
        spec["tolerations"] = [TOLERATION]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


async def create(api: k8s.ApiClient, namespace: str, plural: str, body: Json) -> Json:
    return await request(api, "POST", f"/api/v1/namespaces/{namespace}/{plural}", body=body)


async def create_secret(api: k8s.ApiClient, namespace: str, name: str, data: dict[str, str]) -> Json:
    encoded = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": encoded}
    return await create(api, namespace, "secrets", body)


async def read_pod(api: k8s.ApiClient, namespace: str, name: str) -> Json | None:
    try:
        return await request(api, "GET", f"/api/v1/namespaces/{namespace}/pods/{name}")
    except KubeNotFoundError:
        return None


def main_status(pod: Json | None) -> Json:
    """The ``main`` container's status, ``{}`` before there is one."""
    for status in ((pod or {}).get("status") or {}).get("containerStatuses") or []:
        if status["name"] == "main":
            return dict(status)
    return {}


def running(pod: Json | None) -> bool:
    if pod is None or pod["status"].get("phase") != "Running":
        return False
    return "running" in main_status(pod).get("state", {})


def container_id(pod: Json | None) -> str:
    return str(main_status(pod)["containerID"]).removeprefix("containerd://")


async def pod_where(
    api: k8s.ApiClient, namespace: str, name: str, accept: Callable[[Json | None], bool], what: str
) -> Json:
    async def check() -> Json | None:
        pod = await read_pod(api, namespace, name)
        return pod if pod is not None and accept(pod) else None

    found: Json | None = await wait_for(check, timeout=TIMEOUT, interval=API_POLL, what=f"pod {name} {what}")
    assert found is not None
    return found


async def node_ready(api: k8s.ApiClient, node: str) -> None:
    async def ready() -> bool:
        try:
            found = await request(api, "GET", f"/api/v1/nodes/{node}")
        except KubeNotFoundError:
            return False
        conditions = (found.get("status") or {}).get("conditions") or []
        return any(item["type"] == "Ready" and item["status"] == "True" for item in conditions)

    await wait_for(ready, timeout=TIMEOUT, interval=API_POLL, what=f"node {node} Ready")


async def containers_of(runtime: ContainerRuntime, uid: str) -> list[ContainerInfo]:
    return await runtime.list_containers(labels={POD_UID_LABEL: uid})


async def exec_output(runtime: ContainerRuntime, container: str, *command: str) -> str:
    result = await runtime.exec_sync(container, command, timeout=5)
    assert result.exit_code == 0, result.stderr
    return result.stdout.decode()


async def test_a_tolerating_pod_runs_in_containerd_reports_running_logs_and_goes_away_when_deleted(
    cloud: Cloud,
    start_edge: StartEdge,
    cri_runtime: ContainerRuntime,
    kube_client: k8s.ApiClient,
    kube_namespace: str,
) -> None:
    node = node_name()
    edge = await start_edge(node)
    await node_ready(kube_client, node)
    await create_secret(kube_client, kube_namespace, "greeting", {"word": "hello-from-a-secret"})
    env = [{"name": "WORD", "valueFrom": {"secretKeyRef": {"name": "greeting", "key": "word"}}}]
    created = await create(
        kube_client, kube_namespace, "pods", pod_manifest("web", node, f'echo "$WORD"; {LOOP}', env=env)
    )
    uid = created["metadata"]["uid"]

    pod = await pod_where(kube_client, kube_namespace, "web", running, "Running in the API")

    assert pod["status"]["hostIP"] == "127.0.0.1"
    [container] = await containers_of(cri_runtime, uid)
    assert (container.id, container.state) == (container_id(pod), ContainerState.RUNNING)
    root = Path(edge.config.modules.edged.root_directory)
    log_file = pod_log_dir(root / "pods", pod) / container_log_path("main", 0)
    logged = await wait_for(
        lambda: log_file.is_file() and "hello-from-a-secret" in log_file.read_text(), what="the log line"
    )
    assert logged

    await request(kube_client, "DELETE", f"/api/v1/namespaces/{kube_namespace}/pods/web")

    async def gone() -> bool:
        return await read_pod(kube_client, kube_namespace, "web") is None

    await wait_for(gone, timeout=TIMEOUT, interval=API_POLL, what="the pod gone from the API")
    assert await containers_of(cri_runtime, uid) == []
    assert await cri_runtime.list_pod_sandboxes({POD_UID_LABEL: uid}) == []
    meta = edge.meta
    assert meta is not None
    # The API's delete reaches the edge as a message of its own, a moment after the pod left the API.
    await wait_for(
        lambda: meta.get("pod", kube_namespace, "web") is None, timeout=TIMEOUT, what="the edge forgets it"
    )
    await wait_for(lambda: not log_file.exists(), timeout=TIMEOUT, what="its logs removed")


async def test_a_configmap_change_reaches_the_file_mounted_in_the_running_container(
    cloud: Cloud,
    start_edge: StartEdge,
    cri_runtime: ContainerRuntime,
    kube_client: k8s.ApiClient,
    kube_namespace: str,
) -> None:
    node = node_name()
    await start_edge(node)
    await node_ready(kube_client, node)
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "app"},
        "data": {"mode": "one"},
    }
    await create(kube_client, kube_namespace, "configmaps", configmap)
    manifest = pod_manifest(
        "reader",
        node,
        volumeMounts=[{"name": "config", "mountPath": "/etc/app"}, {"name": "seed", "mountPath": "/seed"}],
        volumes=[{"name": "config", "configMap": {"name": "app"}}, {"name": "seed", "emptyDir": {}}],
    )
    # An init container seeds a file from the ConfigMap (through env) before the app starts.
    manifest["spec"]["initContainers"] = [
        {
            "name": "seed",
            "image": BUSYBOX_IMAGE,
            "command": ["sh", "-c", 'printf %s "$MODE" > /seed/mode'],
            "env": [{"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "mode"}}}],
            "volumeMounts": [{"name": "seed", "mountPath": "/seed"}],
        }
    ]
    await create(kube_client, kube_namespace, "pods", manifest)
    pod = await pod_where(kube_client, kube_namespace, "reader", running, "Running in the API")
    [seeded] = pod["status"]["initContainerStatuses"]
    assert (seeded["name"], seeded["ready"], seeded["state"]["terminated"]["exitCode"]) == ("seed", True, 0)
    container = container_id(pod)
    assert await exec_output(cri_runtime, container, "cat", "/seed/mode") == "one"
    assert await exec_output(cri_runtime, container, "cat", "/etc/app/mode") == "one"

    await request(
        kube_client,
        "PATCH",
        f"/api/v1/namespaces/{kube_namespace}/configmaps/app",
        body={"data": {"mode": "two"}},
        content_type=MERGE_PATCH,
    )

    async def changed() -> bool:
        return await exec_output(cri_runtime, container, "cat", "/etc/app/mode") == "two"

    await wait_for(changed, timeout=TIMEOUT, interval=0.2, what="the mounted file to change")
    assert container_id(await read_pod(kube_client, kube_namespace, "reader")) == container  # not restarted


def metaserver_client(edge: EdgeCore) -> k8s.ApiClient:
    """The ``kubernetes`` client pointed at the edge's MetaServer, as a local app would configure it."""
    configuration = k8s.Configuration(host=f"http://{edge.config.modules.meta_manager.meta_server.server}")
    return k8s.ApiClient(configuration)


def read_offline(api: k8s.ApiClient, namespace: str) -> tuple[Json, Json, Json]:
    """What a local app reads through the client (blocking): the namespace's pods, every service, and the
    first event of a pod watch from the start; as the API's JSON."""
    v1 = k8s.CoreV1Api(api)
    # Timeouts everywhere: a MetaServer that does not answer fails the test instead of holding its thread.
    pods = v1.list_namespaced_pod(namespace, _request_timeout=15)
    services = v1.list_service_for_all_namespaces(_request_timeout=15)
    stream = watch.Watch()  # type: ignore[no-untyped-call]
    events = stream.stream(  # type: ignore[no-untyped-call]
        v1.list_namespaced_pod, namespace, timeout_seconds=10, _request_timeout=15
    )
    try:
        event = next(iter(events))
    finally:
        stream.stop()  # type: ignore[no-untyped-call]
    as_json: Callable[[object], Json] = api.sanitize_for_serialization
    return as_json(pods), as_json(services), {"type": event["type"], "object": as_json(event["object"])}


async def test_with_the_cloud_cut_the_edge_serves_its_store_restarts_a_dead_container_and_catches_up(
    cloud: Cloud,
    start_edge: StartEdge,
    cri_runtime: ContainerRuntime,
    kube_client: k8s.ApiClient,
    kube_namespace: str,
) -> None:
    node = node_name()
    edge = await start_edge(node)
    await node_ready(kube_client, node)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    await create(kube_client, kube_namespace, "services", service)
    manifest = pod_manifest("web", node)
    manifest["metadata"]["labels"] = {"app": "web"}
    created = await create(kube_client, kube_namespace, "pods", manifest)
    uid = created["metadata"]["uid"]
    first = container_id(await pod_where(kube_client, kube_namespace, "web", running, "Running"))
    assert edge.meta is not None
    assert edge.link is not None
    await wait_for(lambda: edge.meta and edge.meta.get("service", kube_namespace, "web"), what="service")

    await cloud.stop()
    link = edge.link
    await wait_for(lambda: not link.connected, timeout=TIMEOUT, what="the link down")

    local = metaserver_client(edge)
    try:
        pods, services, event = await asyncio.to_thread(read_offline, local, kube_namespace)
    finally:
        local.close()  # type: ignore[no-untyped-call]
    assert [(item["metadata"]["name"], item["metadata"]["uid"]) for item in pods["items"]] == [("web", uid)]
    assert pods["kind"] == "PodList"
    assert pods["metadata"]["resourceVersion"]
    assert {"name": "web", "namespace": kube_namespace} in [
        {key: item["metadata"][key] for key in ("name", "namespace")} for item in services["items"]
    ]
    assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "web")
    [container] = await containers_of(cri_runtime, uid)
    assert (container.id, container.state) == (first, ContainerState.RUNNING)  # still running

    pid = await cri_runtime.container_pid(first)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)

    def restarted() -> str | None:
        assert edge.edged is not None
        local_pod = {"status": edge.edged.pod_status(uid) or {}}
        status = main_status(local_pod)
        if status.get("restartCount") == 1 and "running" in status["state"]:
            return container_id(local_pod)
        return None

    second = await wait_for(restarted, timeout=TIMEOUT, what="the container restarted by Edged")
    assert second != first
    stale = main_status(await read_pod(kube_client, kube_namespace, "web"))
    assert stale["restartCount"] == 0  # nobody could tell the API yet

    await cloud.start()

    pod = await pod_where(
        kube_client,
        kube_namespace,
        "web",
        lambda found: running(found) and main_status(found)["restartCount"] == 1,
        "restartCount 1 in the API",
    )
    assert container_id(pod) == second
    assert main_status(pod)["lastState"]["terminated"]["exitCode"] == 137


async def test_a_pod_without_the_edge_toleration_is_not_run_on_a_tainted_edge_node(
    cloud: Cloud,
    start_edge: StartEdge,
    cri_runtime: ContainerRuntime,
    kube_client: k8s.ApiClient,
    kube_namespace: str,
) -> None:
    node = node_name()
    edge = await start_edge(node)
    await node_ready(kube_client, node)
    refused = await create(
        kube_client, kube_namespace, "pods", pod_manifest("intruder", node, tolerate=False)
    )

    def unscheduled(pod: Json | None) -> bool:
        conditions = ((pod or {}).get("status") or {}).get("conditions") or []
        return any(
            item["type"] == "PodScheduled"
            and item["status"] == "False"
            and item.get("reason") == NOT_TOLERATED
            for item in conditions
        )

    await pod_where(kube_client, kube_namespace, "intruder", unscheduled, "PodScheduled=False")
    # A tolerating pod sent after it runs: the refused one would have arrived before it.
    await create(kube_client, kube_namespace, "pods", pod_manifest("guest", node))
    await pod_where(kube_client, kube_namespace, "guest", running, "Running")

    assert edge.meta is not None
    assert [pod["metadata"]["name"] for pod in edge.meta.list("pod", kube_namespace)] == ["guest"]
    assert await cri_runtime.list_pod_sandboxes({POD_UID_LABEL: refused["metadata"]["uid"]}) == []
    intruder = await read_pod(kube_client, kube_namespace, "intruder")
    assert intruder is not None
    assert intruder["status"].get("phase", "Pending") == "Pending"


def stored_keys(database: Path) -> list[str]:
    """The keys of the edge's ``meta`` table, read from its SQLite file as any tool would."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        return sorted(str(row[0]) for row in conn.execute("SELECT key FROM meta"))


async def test_a_node_never_receives_another_nodes_pods_or_secrets(
    cloud: Cloud, start_edge: StartEdge, kube_client: k8s.ApiClient, kube_namespace: str
) -> None:
    node_a, node_b = node_name(), node_name()
    edge_a = await start_edge(node_a, edged=False)
    edge_b = await start_edge(node_b, edged=False)
    await node_ready(kube_client, node_a)
    await node_ready(kube_client, node_b)
    for owner, node in (("a", node_a), ("b", node_b)):
        await create_secret(kube_client, kube_namespace, f"secret-{owner}", {"password": f"of-{owner}"})
        volumes = [{"name": "creds", "secret": {"secretName": f"secret-{owner}"}}]
        await create(kube_client, kube_namespace, "pods", pod_manifest(f"pod-{owner}", node, volumes=volumes))

    def holds(edge: EdgeCore, owner: str) -> bool:
        assert edge.meta is not None
        return bool(
            edge.meta.get("pod", kube_namespace, f"pod-{owner}")
            and edge.meta.get("secret", kube_namespace, f"secret-{owner}")
        )

    await wait_for(lambda: holds(edge_a, "a") and holds(edge_b, "b"), timeout=TIMEOUT, what="each its own")

    keys_b = await asyncio.to_thread(stored_keys, edge_b.config.database.path)
    assert f"{kube_namespace}/secret/secret-b" in keys_b
    assert not [key for key in keys_b if key.endswith(("/pod-a", "/secret-a"))]
    keys_a = await asyncio.to_thread(stored_keys, edge_a.config.database.path)
    assert not [key for key in keys_a if key.endswith(("/pod-b", "/secret-b"))]
    served = edge_b.config.modules.meta_manager.meta_server.server
    async with aiohttp.ClientSession() as http, http.get(f"http://{served}/api/v1/pods") as response:
        names = [item["metadata"]["name"] for item in (await response.json())["items"]]
    assert names == ["pod-b"]
    assert edge_a.config.modules.edge_hub.tls_cert_file != edge_b.config.modules.edge_hub.tls_cert_file


async def start_process(config: Path, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            EDGETWIN, "edgecore", "--config", str(config), stdout=out, stderr=asyncio.subprocess.STDOUT
        )


async def synced(healthz: str, process: asyncio.subprocess.Process, log: Path) -> bool:
    """Whether the edgecore process is healthy and Edged has finished a pod sync."""
    if process.returncode is not None:
        output = await asyncio.to_thread(log.read_text, errors="replace")
        pytest.fail(f"edgecore exited with {process.returncode}:\n{output}")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://{healthz}/healthz") as response:
            if response.status != 200:
                return False
        async with http.get(f"http://{healthz}/metrics") as response:
            metrics = await response.text()
    return any(
        line.startswith('edgetwin_edged_pod_syncs_total{result="ok"}') and float(line.split()[-1]) >= 1
        for line in metrics.splitlines()
    )


async def test_edgecore_killed_and_restarted_adopts_its_running_container_instead_of_duplicating_it(
    cloud: Cloud,
    containerd: Containerd,
    cri_runtime: ContainerRuntime,
    kube_client: k8s.ApiClient,
    kube_namespace: str,
    tmp_path: Path,
) -> None:
    node = node_name()
    config = await edge_config(cloud, containerd, node, tmp_path)
    healthz = config.edgetwin.healthz = f"127.0.0.1:{free_port()}"
    config_file, log = tmp_path / "edgecore-run.yaml", tmp_path / "edgecore.log"
    config_file.write_text(dump_config(config))
    processes: list[asyncio.subprocess.Process] = []
    try:
        processes.append(await start_process(config_file, log))
        await node_ready(kube_client, node)
        created = await create(kube_client, kube_namespace, "pods", pod_manifest("survivor", node))
        uid = created["metadata"]["uid"]
        pod = await pod_where(kube_client, kube_namespace, "survivor", running, "Running")
        [sandbox] = await cri_runtime.list_pod_sandboxes({POD_UID_LABEL: uid})

        processes[-1].kill()
        await processes[-1].wait()
        [container] = await containers_of(cri_runtime, uid)
        assert (container.id, container.state) == (container_id(pod), ContainerState.RUNNING)

        processes.append(await start_process(config_file, log))
        await wait_for(
            lambda: synced(healthz, processes[-1], log), timeout=TIMEOUT, interval=0.2, what="a pod sync"
        )

        [adopted] = await containers_of(cri_runtime, uid)
        assert (adopted.id, adopted.state, adopted.restart_count) == (container.id, ContainerState.RUNNING, 0)
        assert [item.id for item in await cri_runtime.list_pod_sandboxes({POD_UID_LABEL: uid})] == [
            sandbox.id
        ]
        after = await read_pod(kube_client, kube_namespace, "survivor")
        assert running(after)
        assert (container_id(after), main_status(after)["restartCount"]) == (container.id, 0)
    finally:
        for process in processes:
            if process.returncode is None:
                process.terminate()
            await asyncio.wait_for(process.wait(), 15)
