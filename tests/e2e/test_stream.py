"""Issue 10 item 5: ``kubectl logs`` and ``kubectl exec`` for edge pods, through cloudcore's stream port
and the edge's tunnel.

cloudcore runs in-process with ``modules.cloudStream`` on free loopback ports; the edge is joined with
``edgetwin join`` and runs EdgeCore with Edged on the session's containerd and ``modules.edgeStream``
pointed at the tunnel port, with its node certificate. The apiserver reaches the stream port because
cloudcore writes it as the Node's kubelet port and the edge announces InternalIP 127.0.0.1. ``kubectl``
itself is the client against the real kube-apiserver; the emulator does not proxy ``pods/log`` /
``pods/exec`` to kubelets, so there the stream port is called directly (as the apiserver would).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes import client as k8s

from cloudcore import EDGE_ROLE_LABEL, CloudCore, KubeNotFoundError
from cloudcore.kube import request
from edgecore import EdgeCore, EdgeCoreConfig
from edgecore.edged import ContainerRuntime
from edgetwin.testing import free_port, wait_for
from edgetwin.testing.cluster import cloud_config, join_edge, run_pods, running_cloud
from edgetwin.testing.containerd import BUSYBOX_IMAGE, Containerd
from edgetwin.testing.kubeapi import KubeApi
from edgetwin.testing.pki import issue

pytestmark = pytest.mark.kube

TIMEOUT = 30.0
KUBECTL_TIMEOUT = 20.0
TOLERATION = {"key": EDGE_ROLE_LABEL, "operator": "Exists", "effect": "NoSchedule"}
# Prints to both streams once, then a numbered tick every 0.2 s; exits at once on SIGTERM.
TICKER = (
    "trap 'exit 0' TERM; echo hello from the edge; echo to stderr >&2; i=0; "
    "while true; do i=$((i+1)); echo tick $i; sleep 0.2; done"
)
TICK = re.compile(rb"tick (\d+)")

needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")

Json = dict[str, Any]


@dataclass
class EdgePod:
    """A running pod on a connected edge, and how to reach it."""

    cloud: CloudCore
    edge: EdgeCore
    namespace: str
    name: str

    @property
    def stream_url(self) -> str:
        port = self.cloud.stream.stream_port if self.cloud.stream is not None else None
        return f"https://127.0.0.1:{port}"


@pytest.fixture
async def cloud(kube_client: k8s.ApiClient, kube_namespace: str) -> AsyncIterator[CloudCore]:
    config = cloud_config(kube_namespace, keepalive=5)
    stream = config.modules.cloud_stream
    stream.enable = True
    stream.stream_port, stream.tunnel_port = free_port(), free_port()
    stream.tls_stream_ca_file = ""  # the test apiserver has no kubelet client certificate
    async with running_cloud(kube_client, config) as running:
        yield running


def edge_stream_config(config: EdgeCoreConfig, cloud: CloudCore) -> EdgeCoreConfig:
    """``modules.edgeStream`` towards cloudcore's tunnel, with the certificate ``edgetwin join`` wrote."""
    hub, stream = config.modules.edge_hub, config.modules.edge_stream
    assert cloud.stream is not None
    stream.enable = True
    stream.server = f"127.0.0.1:{cloud.stream.tunnel_port}"
    stream.tls_tunnel_ca_file = hub.tls_ca_file
    stream.tls_tunnel_cert_file = hub.tls_cert_file
    stream.tls_tunnel_private_key_file = hub.tls_private_key_file
    config.modules.edged.node_ip = "127.0.0.1"  # where the apiserver looks for the node's kubelet port
    return config


@pytest.fixture
async def edge_pod(
    cloud: CloudCore,
    kube_client: k8s.ApiClient,
    kube_namespace: str,
    containerd: Containerd,
    cri_runtime: ContainerRuntime,
    tmp_path: Path,
) -> AsyncIterator[EdgePod]:
    """A joined edge with Edged and the tunnel, running the ticker pod (Running in the API)."""
    node = f"edge-{uuid.uuid4().hex[:8]}"
    config = await asyncio.to_thread(join_edge, cloud, node, tmp_path, with_edge_taint=True)
    run_pods(config, containerd.endpoint, tmp_path / "edged", cgroup_root=containerd.cgroup_parent)
    async with EdgeCore(edge_stream_config(config, cloud)) as edge:
        await wait_for(
            lambda: kubelet_port(kube_client, node), timeout=TIMEOUT, what="the node's kubelet port"
        )
        name = "ticker"
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "nodeName": node,
                "tolerations": [TOLERATION],
                "terminationGracePeriodSeconds": 5,
                "containers": [{"name": "main", "image": BUSYBOX_IMAGE, "command": ["sh", "-c", TICKER]}],
            },
        }
        await request(kube_client, "POST", f"/api/v1/namespaces/{kube_namespace}/pods", body=body)
        await wait_for(
            lambda: pod_running(kube_client, kube_namespace, name), timeout=TIMEOUT, what="pod Running"
        )
        tunnel = cloud.stream.tunnel if cloud.stream is not None else None
        assert tunnel is not None
        await wait_for(lambda: node in tunnel.connected_nodes() or None, timeout=TIMEOUT, what="tunnel")
        yield EdgePod(cloud, edge, kube_namespace, name)


async def kubelet_port(api: k8s.ApiClient, node: str) -> int | None:
    try:
        found = await request(api, "GET", f"/api/v1/nodes/{node}")
    except KubeNotFoundError:
        return None
    port = (((found.get("status") or {}).get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get(
        "Port"
    )
    return int(port) if port else None


async def pod_running(api: k8s.ApiClient, namespace: str, name: str) -> bool:
    try:
        pod = await request(api, "GET", f"/api/v1/namespaces/{namespace}/pods/{name}")
    except KubeNotFoundError:
        return False
    return bool((pod.get("status") or {}).get("phase") == "Running")


@dataclass(frozen=True)
class Ran:
    code: int
    stdout: bytes
    stderr: bytes


def websocket_kubectl() -> str | None:
    """A kubectl that runs exec over websockets (1.30 or newer), if this machine has one.

    The Google Cloud SDK's ``kubectl`` is a dispatcher: against a 1.28 apiserver it runs its 1.28 client,
    which speaks only SPDY; the newer clients it ships sit next to it as ``kubectl.1.<minor>``.
    """
    found = shutil.which("kubectl")
    if found is None:
        return None
    real = Path(found).resolve()
    siblings = sorted(real.parent.glob("kubectl.1.*"), key=lambda path: int(path.suffix[1:]), reverse=True)
    for candidate in siblings:
        if int(candidate.suffix[1:]) >= 30:
            return str(candidate)
    return None


async def kubectl(kube_api: KubeApi, *args: str, binary: str = "kubectl") -> Ran:
    argv = kube_api.kubectl(*args)
    process = await asyncio.create_subprocess_exec(
        binary,
        *argv[1:],
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(KUBECTL_TIMEOUT):
            stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return Ran(process.returncode, stdout, stderr)


def ticks(data: bytes) -> list[int]:
    return [int(number) for number in TICK.findall(data)]


# -- kubectl against the real kube-apiserver -----------------------------------------------------------------


@needs_kubectl
async def test_kubectl_logs_and_exec_reach_the_edge_pod(kube_api: KubeApi, edge_pod: EdgePod) -> None:
    if kube_api.backend != "real":
        pytest.skip("the emulator does not proxy pods/log and pods/exec to a node's kubelet port")
    namespace, pod = edge_pod.namespace, edge_pod.name

    logs = await kubectl(kube_api, "logs", "-n", namespace, pod)
    assert logs.code == 0, logs.stderr.decode()
    lines = logs.stdout.splitlines()
    # Both of the container's streams, interleaved as the runtime read them.
    assert {b"hello from the edge", b"to stderr", b"tick 1"} <= set(lines[:4])

    tail = await kubectl(kube_api, "logs", "-n", namespace, pod, "--tail=1", "--timestamps")
    assert tail.code == 0, tail.stderr.decode()
    assert re.fullmatch(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z tick \d+\n", tail.stdout), tail.stdout

    # Follow: lines the container prints after the request arrive on the open stream.
    seen = max(ticks(logs.stdout))
    follow = await asyncio.create_subprocess_exec(
        *kube_api.kubectl("logs", "-f", "-n", namespace, pod, "--tail=0"),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert follow.stdout is not None
        followed = b""
        async with asyncio.timeout(KUBECTL_TIMEOUT):
            while len([tick for tick in ticks(followed) if tick > seen]) < 3:
                line = await follow.stdout.readline()
                assert line, f"the follow ended: {followed!r}"
                followed += line
    finally:
        follow.kill()
        await follow.communicate()
    assert ticks(followed) == list(range(ticks(followed)[0], ticks(followed)[-1] + 1))  # in order, none lost

    websockets = websocket_kubectl()
    if websockets is None:
        pytest.skip("no kubectl >= 1.30 here: older ones run exec over SPDY, which the stream port refuses")
    ran = await kubectl(
        kube_api,
        "exec",
        "-n",
        namespace,
        pod,
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
        binary=websockets,
    )
    assert ran.code == 3, ran.stderr.decode()
    assert ran.stdout == b"out\n"
    assert b"err\n" in ran.stderr

    ran = await kubectl(
        kube_api, "exec", "-n", namespace, pod, "--", "cat", "/proc/1/cmdline", binary=websockets
    )
    assert ran.code == 0, ran.stderr.decode()
    assert ran.stdout.startswith(b"sh\0-c\0trap")  # the pod's own process, in its own pid namespace

    interactive = await kubectl(kube_api, "exec", "-i", "-n", namespace, pod, "--", "cat", binary=websockets)
    assert interactive.code != 0
    assert b"interactive exec" in interactive.stderr


@needs_kubectl
async def test_kubectl_logs_of_a_pod_whose_node_has_no_tunnel_says_so(
    kube_api: KubeApi, cloud: CloudCore, kube_client: k8s.ApiClient, kube_namespace: str, tmp_path: Path
) -> None:
    if kube_api.backend != "real":
        pytest.skip("the emulator does not proxy pods/log to a node's kubelet port")
    node = f"edge-{uuid.uuid4().hex[:8]}"
    config = await asyncio.to_thread(join_edge, cloud, node, tmp_path)  # edgeStream left off
    config.modules.edged.node_ip = "127.0.0.1"
    async with EdgeCore(config):
        await wait_for(
            lambda: kubelet_port(kube_client, node), timeout=TIMEOUT, what="the node's kubelet port"
        )
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "lonely"},
            "spec": {
                "nodeName": node,
                "tolerations": [TOLERATION],
                "containers": [{"name": "main", "image": BUSYBOX_IMAGE}],
            },
        }
        await request(kube_client, "POST", f"/api/v1/namespaces/{kube_namespace}/pods", body=body)
        logs = await kubectl(kube_api, "logs", "-n", kube_namespace, "lonely")
    assert logs.code != 0
    assert f"no stream tunnel to node {node}".encode() in logs.stderr, logs.stderr.decode()


# -- the stream port as the apiserver calls it (both backends) --------------------------------------------


async def test_the_stream_port_serves_logs_and_websocket_exec_routed_by_the_pod(edge_pod: EdgePod) -> None:
    base, namespace, pod = edge_pod.stream_url, edge_pod.namespace, edge_pod.name
    async with aiohttp.ClientSession() as session:
        async with session.get(
            f"{base}/containerLogs/{namespace}/{pod}/main", params={"tailLines": "2"}, ssl=False
        ) as answer:
            assert answer.status == 200
            body = await answer.read()
        assert body.count(b"\n") == 2
        assert all(
            re.fullmatch(rb"hello from the edge|to stderr|tick \d+", line) for line in body.splitlines()
        )

        async with session.get(
            f"{base}/containerLogs/{namespace}/{pod}/main", params={"limitBytes": "7"}, ssl=False
        ) as answer:
            assert await answer.read() in (b"hello f", b"to stde", b"tick 1\n")

        async with session.get(f"{base}/containerLogs/{namespace}/{pod}/sidecar", ssl=False) as answer:
            assert answer.status == 404
            assert 'container "sidecar" in pod "ticker"' in await answer.text()
        async with session.get(f"{base}/containerLogs/{namespace}/nobody/main", ssl=False) as answer:
            assert answer.status == 404
        async with session.get(
            f"{base}/containerLogs/{namespace}/{pod}/main", params={"tailLines": "-1"}, ssl=False
        ) as answer:
            assert answer.status == 400

        # SPDY (kubectl's fallback) is refused with what to use instead.
        async with session.post(
            f"{base}/exec/{namespace}/{pod}/main?command=true&stdout=1", ssl=False
        ) as answer:
            assert answer.status == 400
            assert "not SPDY" in (await answer.json())["message"]

        query = "command=sh&command=-c&command=echo+out%3B+echo+err+>%262%3B+exit+7&stdout=1&stderr=1"
        messages = await exec_websocket(session, f"{base}/exec/{namespace}/{pod}/main?{query}")
    assert messages[1] == b"out\n"
    assert messages[2] == b"err\n"
    status = json.loads(messages[3])
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "7"}]


async def test_a_followed_log_ends_when_its_container_exits(
    edge_pod: EdgePod, kube_client: k8s.ApiClient
) -> None:
    node = edge_pod.edge.node_name
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "once"},
        "spec": {
            "nodeName": node,
            "tolerations": [TOLERATION],
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": BUSYBOX_IMAGE,
                    "command": ["sh", "-c", "echo one; sleep 2; echo two"],
                }
            ],
        },
    }
    namespace = edge_pod.namespace
    await request(kube_client, "POST", f"/api/v1/namespaces/{namespace}/pods", body=body)
    await wait_for(lambda: pod_running(kube_client, namespace, "once"), timeout=TIMEOUT, what="pod Running")
    url = f"{edge_pod.stream_url}/containerLogs/{namespace}/once/main"
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, params={"follow": "true"}, ssl=False) as answer,
    ):
        assert answer.status == 200
        async with asyncio.timeout(TIMEOUT):
            assert await answer.read() == b"one\ntwo\n"  # read to the end: the stream closed by itself


async def exec_websocket(session: aiohttp.ClientSession, url: str) -> dict[int, bytes]:
    """Run an exec over ``v5.channel.k8s.io`` as kubectl does; the bytes received on each channel."""
    received: dict[int, bytes] = {}
    async with session.ws_connect(url, protocols=("v5.channel.k8s.io",), ssl=False) as websocket:
        assert websocket.protocol == "v5.channel.k8s.io"
        async with asyncio.timeout(TIMEOUT):
            async for message in websocket:
                assert message.type is aiohttp.WSMsgType.BINARY
                channel, data = message.data[0], message.data[1:]
                received[channel] = received.get(channel, b"") + data
    return received


async def test_the_edge_refuses_interactive_exec_on_the_error_channel(edge_pod: EdgePod) -> None:
    target = f"{edge_pod.namespace}/{edge_pod.name}/main"
    url = f"{edge_pod.stream_url}/exec/{target}?command=sh&input=1&output=1&tty=1"
    async with aiohttp.ClientSession() as session:
        messages = await exec_websocket(session, url)
    status = json.loads(messages[3])
    assert status["status"] == "Failure"
    assert "interactive exec" in status["message"]


async def test_the_stream_port_says_which_node_has_no_tunnel(
    cloud: CloudCore, kube_client: k8s.ApiClient, kube_namespace: str
) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "nowhere"},
        "spec": {"nodeName": "ghost-node", "containers": [{"name": "main", "image": BUSYBOX_IMAGE}]},
    }
    await request(kube_client, "POST", f"/api/v1/namespaces/{kube_namespace}/pods", body=body)
    assert cloud.stream is not None
    url = f"https://127.0.0.1:{cloud.stream.stream_port}/containerLogs/{kube_namespace}/nowhere/main"
    async with aiohttp.ClientSession() as session, session.get(url, ssl=False) as answer:
        assert answer.status == 502
        assert "no stream tunnel to node ghost-node" in await answer.text()


# -- who may connect -----------------------------------------------------------------------------------------


async def test_the_stream_port_requires_a_client_certificate_of_tls_stream_ca_file(
    kube_client: k8s.ApiClient, kube_namespace: str, tmp_path: Path
) -> None:
    ca = issue(tmp_path, "kubelet-client-ca")
    apiserver = issue(tmp_path, "kube-apiserver-kubelet-client", issuer=ca)
    stranger = issue(tmp_path / "other", "stranger", issuer=issue(tmp_path / "other", "other-ca"))
    config = cloud_config(kube_namespace)
    stream = config.modules.cloud_stream
    stream.enable = True
    stream.stream_port, stream.tunnel_port = free_port(), free_port()
    stream.tls_stream_ca_file = str(ca.cert_file)
    async with running_cloud(kube_client, config) as cloud:
        assert cloud.stream is not None
        url = f"https://127.0.0.1:{cloud.stream.stream_port}/containerLogs/{kube_namespace}/missing/main"

        async def status_with(client: Any) -> int:
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            if client is not None:
                context.load_cert_chain(client.cert_file, client.key_file)
            async with aiohttp.ClientSession() as session, session.get(url, ssl=context) as answer:
                return answer.status

        assert await status_with(apiserver) == 404  # through TLS, to the pod lookup
        for client in (None, stranger):
            with pytest.raises(aiohttp.ClientError):
                await status_with(client)


async def test_the_tunnel_takes_only_node_certificates_of_the_cluster_ca(
    cloud: CloudCore, tmp_path: Path
) -> None:
    assert cloud.stream is not None
    tunnel = cloud.stream.tunnel
    url = f"wss://127.0.0.1:{tunnel.port}/v1/kubeedge/connect"
    imposter = issue(tmp_path, "system:node:edge-1", issuer=issue(tmp_path, "other-ca"))
    cert_pem, key_pem = cloud.ca.issue_node_cert("edge-2")
    (tmp_path / "edge-2.crt").write_bytes(cert_pem)
    (tmp_path / "edge-2.key").write_bytes(key_pem)

    def context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
        trusting = ssl.create_default_context(cadata=cloud.ca.cert_pem().decode())
        trusting.load_cert_chain(cert_file, key_file)
        return trusting

    async with aiohttp.ClientSession() as session:
        node = context(tmp_path / "edge-2.crt", tmp_path / "edge-2.key")
        async with session.ws_connect(url, ssl=node):
            await wait_for(
                lambda: "edge-2" in tunnel.connected_nodes(), timeout=TIMEOUT, what="edge-2's tunnel"
            )
        with pytest.raises(aiohttp.ClientError):
            async with session.ws_connect(url, ssl=context(imposter.cert_file, imposter.key_file)):
                pass
        with pytest.raises(aiohttp.ClientError):
            async with session.ws_connect(
                url, ssl=ssl.create_default_context(cadata=cloud.ca.cert_pem().decode())
            ):
                pass
    assert "edge-1" not in tunnel.connected_nodes()
