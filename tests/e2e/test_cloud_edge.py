"""The cloud-edge link end to end: gettoken → join → edgecore → a Ready edge Node, as a KubeEdge user does it.

cloudcore runs in-process against the Kubernetes API fixture; ``edgetwin gettoken`` and ``edgetwin join`` run
as commands; edgecore runs from the edgecore.yaml that join wrote, with its own mosquitto.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from typer.testing import CliRunner

from cloudcore import CloudCore, KubeNotFoundError
from cloudcore.kube import request
from edgecore import EdgeCore, EdgeCoreConfigError
from edgetwin.cli import app
from edgetwin.testing import wait_for
from edgetwin.testing.cluster import cloud_config, join_edge, running_cloud
from edgetwin.testing.kubeapi import KubeApi

pytestmark = pytest.mark.kube

GRACE = 2.0


@pytest.fixture
async def cloud(kube_client: k8s.ApiClient, kube_namespace: str) -> AsyncIterator[CloudCore]:
    config = cloud_config(kube_namespace, grace_period=GRACE, keepalive=5)
    async with running_cloud(kube_client, config) as running:
        yield running


def node_name() -> str:
    return f"edge-{uuid.uuid4().hex[:8]}"


async def read_node(api: k8s.ApiClient, name: str) -> dict[str, Any] | None:
    try:
        return await request(api, "GET", f"/api/v1/nodes/{name}")
    except KubeNotFoundError:
        return None


def ready_status(node: dict[str, Any] | None) -> str | None:
    for condition in ((node or {}).get("status") or {}).get("conditions") or []:
        if condition["type"] == "Ready":
            status: str = condition["status"]
            return status
    return None


async def test_gettoken_join_and_run_make_a_ready_edge_node_that_goes_not_ready_when_stopped(
    cloud: CloudCore, kube_api: KubeApi, kube_client: k8s.ApiClient, kube_namespace: str, tmp_path: Path
) -> None:
    got = await asyncio.to_thread(
        CliRunner().invoke,
        app,
        ["gettoken", "--kubeconfig", str(kube_api.kubeconfig), "--namespace", kube_namespace],
    )
    assert got.exit_code == 0, got.output
    name = node_name()
    config = await asyncio.to_thread(
        join_edge,
        cloud,
        name,
        tmp_path,
        token=got.stdout.strip(),
        with_edge_taint=True,
        labels="site=lab-1",
    )
    async with EdgeCore(config):
        node = await wait_for(
            lambda: _ready(kube_client, name, "True"), timeout=30, what=f"node {name} Ready"
        )
    labels = node["metadata"]["labels"]
    assert labels["node-role.kubernetes.io/edge"] == ""
    assert labels["node-role.kubernetes.io/agent"] == ""
    assert labels["site"] == "lab-1"
    taints = node["spec"].get("taints") or []
    assert {"key": "node-role.kubernetes.io/edge", "effect": "NoSchedule"} in [
        {"key": taint["key"], "effect": taint["effect"]} for taint in taints
    ]
    info = node["status"]["nodeInfo"]
    assert "-edgetwin-v" in info["kubeletVersion"]
    assert int(node["status"]["capacity"]["cpu"]) >= 1

    # Stopped: NotReady once the grace period passes without a keepalive.
    await wait_for(lambda: _ready(kube_client, name, "Unknown"), timeout=GRACE + 15, what="NotReady")
    async with EdgeCore(config):
        await wait_for(lambda: _ready(kube_client, name, "True"), timeout=30, what="Ready again")


async def test_the_token_kept_in_tokensecret_joins_as_keadm_users_read_it(
    cloud: CloudCore, kube_client: k8s.ApiClient, kube_namespace: str, tmp_path: Path
) -> None:
    # What `keadm gettoken` and KubeEdge's docs do:
    # kubectl get secret -n kubeedge tokensecret -o jsonpath='{.data.tokendata}' | base64 -d
    secret = await request(kube_client, "GET", f"/api/v1/namespaces/{kube_namespace}/secrets/tokensecret")
    token = base64.b64decode(secret["data"]["tokendata"]).decode()
    assert token.split(".", 1)[0] == cloud.ca.hash()
    assert "tokenkey" in secret["data"]  # the key that signs it, beside it

    name = node_name()
    config = await asyncio.to_thread(join_edge, cloud, name, tmp_path, token=token)
    async with EdgeCore(config):
        await wait_for(lambda: _ready(kube_client, name, "True"), timeout=30, what=f"node {name} Ready")


async def _ready(api: k8s.ApiClient, name: str, status: str) -> dict[str, Any] | None:
    node = await read_node(api, name)
    return node if ready_status(node) == status else None


async def test_an_edge_without_join_is_told_to_join(tmp_path: Path) -> None:
    from edgecore import EdgeCoreConfig

    config = EdgeCoreConfig()
    config.database.data_source = str(tmp_path / "edge.db")
    config.modules.edge_hub.enable = True
    config.modules.edge_hub.tls_cert_file = str(tmp_path / "missing.crt")
    with pytest.raises(EdgeCoreConfigError, match=r"modules.edgeHub.tlsCertFile.*run `edgetwin join` first"):
        await EdgeCore(config).start()
