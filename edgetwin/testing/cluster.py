"""A cloud and its edges on one machine: cloudcore in-process, ``edgetwin join`` into a directory, edgecore.

Used by the end-to-end tests, the demo and the benchmarks: everything is real (TLS on loopback, the Kubernetes
API of :mod:`edgetwin.testing.kubeapi`, the join command a user runs); only ports and directories are picked
for a shared machine, and the timings are shortened where a test would otherwise wait for a minute.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import kubernetes.client as k8s
from typer.testing import CliRunner

from cloudcore import CloudCore, CloudCoreConfig
from edgecore import EdgeCoreConfig, MqttMode, load_config
from edgetwin.testing.ports import free_port

__all__ = ["JoinError", "cloud_config", "join_edge", "run_pods", "running_cloud"]


class JoinError(AssertionError):
    """``edgetwin join`` failed; the message holds its output."""


def cloud_config(namespace: str, *, grace_period: float = 40.0, keepalive: int = 30) -> CloudCoreConfig:
    """cloudcore on loopback, free ports, its Secrets and ObjectSyncs in ``namespace``, no ``/healthz``."""
    config = CloudCoreConfig()
    hub = config.modules.cloud_hub
    hub.advertise_address = ["127.0.0.1"]
    hub.keepalive_interval = keepalive
    hub.websocket.address = hub.https.address = "127.0.0.1"
    hub.websocket.port = free_port()
    hub.https.port = free_port()
    config.edgetwin.namespace = namespace
    config.edgetwin.healthz = ""
    config.edgetwin.node_grace_period = grace_period
    return config


@contextlib.asynccontextmanager
async def running_cloud(api: k8s.ApiClient, config: CloudCoreConfig) -> AsyncIterator[CloudCore]:
    """cloudcore started with ``config`` against ``api``; stopped on exit."""
    async with CloudCore(config, api) as cloud:
        yield cloud


def join_edge(
    cloud: CloudCore,
    node: str,
    workdir: Path,
    *,
    token: str | None = None,
    with_edge_taint: bool = False,
    labels: str = "",
    echo: Callable[[str], None] | None = None,
) -> EdgeCoreConfig:
    """Run ``edgetwin join`` for ``node`` into ``workdir`` and return its edgecore.yaml, ready to run here.

    Blocking (the command runs its own event loop): call it in a thread from async code. The returned config
    differs from the written file only where one machine hosts several edges: its own mosquitto (internal
    mode) on a free port, no ``/healthz``, and a one-second heartbeat.
    """
    from edgetwin.cli import app

    args = [
        "join",
        "--cloudcore-ipport",
        f"127.0.0.1:{cloud.websocket_port}",
        "--certport",
        str(cloud.https_port),
        "--token",
        token if token is not None else cloud.token(),
        "--edgenode-name",
        node,
        "--kubeedge-dir",
        str(workdir / "kubeedge"),
        "--database",
        str(workdir / "edgecore.db"),
    ]
    if with_edge_taint:
        args.append("--with-edge-taint")
    if labels:
        args += ["--labels", labels]
    result = CliRunner().invoke(app, args)
    if echo is not None:
        for line in result.output.splitlines():
            echo(line)
    if result.exit_code != 0:
        raise JoinError(f"edgetwin join exited {result.exit_code}:\n{result.output}")
    config = load_config(workdir / "kubeedge" / "config" / "edgecore.yaml")
    config.modules.event_bus.mqtt_mode = MqttMode.INTERNAL
    config.modules.event_bus.mqtt_server_internal = f"tcp://127.0.0.1:{free_port()}"
    config.modules.edge_hub.heartbeat = 1
    config.edgetwin.healthz = ""
    return config


def run_pods(
    config: EdgeCoreConfig, runtime_endpoint: str, root_dir: Path, *, cgroup_root: str
) -> EdgeCoreConfig:
    """``config`` (changed in place) with Edged on the CRI socket ``runtime_endpoint`` and MetaServer on a
    free loopback port: pods' volumes and logs go under ``root_dir``, their cgroups under ``cgroup_root``
    (a test containerd's, so that stopping it finds them)."""
    edged = config.modules.edged
    edged.enable = True
    edged.root_directory = str(root_dir)
    edged.tailored_kubelet_config.container_runtime_endpoint = runtime_endpoint
    edged.tailored_kubelet_config.cgroup_root = cgroup_root
    server = config.modules.meta_manager.meta_server
    server.enable = True
    server.server = f"127.0.0.1:{free_port()}"
    return config
