"""`edgetwin cloudcore` as users run it: cloudcore.yaml, a kubeconfig, /healthz, /metrics, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from cloudcore import CloudCoreConfig, dump_config
from edgetwin.testing import free_port, wait_for
from edgetwin.testing.kubeapi import KubeApi

pytestmark = pytest.mark.kube

EDGETWIN = shutil.which("edgetwin", path=str(Path(sys.executable).parent)) or "edgetwin"


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.text()


def loopback_config(namespace: str, *, healthz: str) -> CloudCoreConfig:
    """cloudcore on free loopback ports, its Secrets in ``namespace``."""
    config = CloudCoreConfig()
    hub = config.modules.cloud_hub
    hub.websocket.address = hub.https.address = "127.0.0.1"
    hub.websocket.port, hub.https.port = free_port(), free_port()
    config.edgetwin.namespace = namespace
    config.edgetwin.healthz = healthz
    return config


async def start_cloudcore(
    config_file: Path, kube_api: KubeApi, *, stdout: Any, stderr: Any
) -> asyncio.subprocess.Process:
    """``edgetwin cloudcore --config FILE --kubeconfig ...`` as a user starts it."""
    return await asyncio.create_subprocess_exec(
        EDGETWIN,
        "cloudcore",
        "--config",
        str(config_file),
        "--kubeconfig",
        str(kube_api.kubeconfig),
        stdout=stdout,
        stderr=stderr,
    )


async def test_cloudcore_serves_health_and_metrics_and_stops_on_sigterm(
    kube_api: KubeApi, kube_namespace: str, tmp_path: Path
) -> None:
    config = loopback_config(kube_namespace, healthz=f"127.0.0.1:{free_port()}")
    config_file = tmp_path / "cloudcore.yaml"
    data = yaml.safe_load(dump_config(config))
    data["modules"]["router"] = {"enable": False}  # a KubeEdge module edgetwin does not have
    config_file.write_text(yaml.safe_dump(data))
    log = tmp_path / "cloudcore.log"
    with log.open("wb") as out:
        process = await start_cloudcore(config_file, kube_api, stdout=out, stderr=asyncio.subprocess.STDOUT)
    base = f"http://{config.edgetwin.healthz}"
    try:

        async def healthy() -> bool:
            if process.returncode is not None:
                pytest.fail(f"cloudcore exited with {process.returncode}:\n{log.read_text()}")
            try:
                status, _ = await get(f"{base}/healthz")
            except aiohttp.ClientError:
                return False
            return status == 200

        await wait_for(healthy, timeout=60, what="cloudcore /healthz 200")
        _, body = await get(f"{base}/healthz")
        health = json.loads(body)
        assert {name: module["state"] for name, module in health["modules"].items()} == {
            "certserver": "running",
            "tokenpublisher": "running",
            "nodecontroller": "running",
            "cloudhub": "running",
            "devicecontroller": "running",
            "edgecontroller": "running",
        }
        assert health["connected_nodes"] == []
        _, metrics = await get(f"{base}/metrics")
        assert "cloudsync_connected_nodes" in metrics
        assert "cloudsync_acks_pending" in metrics
        assert "modules.router" in log.read_text()  # the unknown KubeEdge field is named in one warning
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_cloudcore_names_a_bad_setting_and_exits_2(tmp_path: Path) -> None:
    config_file = tmp_path / "cloudcore.yaml"
    config_file.write_text("modules:\n  cloudHub:\n    quic:\n      enable: true\n")
    process = await asyncio.create_subprocess_exec(
        EDGETWIN,
        "cloudcore",
        "--config",
        str(config_file),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert "modules.cloudHub.quic.enable" in stderr.decode()
    assert "no QUIC transport" in stderr.decode()


async def test_cloudcore_with_its_port_taken_exits_at_once_naming_the_address(
    kube_api: KubeApi, kube_namespace: str, tmp_path: Path
) -> None:
    config = loopback_config(kube_namespace, healthz="")
    hub = config.modules.cloud_hub
    config_file = tmp_path / "cloudcore.yaml"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        hub.websocket.port = taken.getsockname()[1]
        config_file.write_text(dump_config(config))
        pipe = asyncio.subprocess.PIPE
        process = await start_cloudcore(config_file, kube_api, stdout=pipe, stderr=pipe)
        # Restarting frees no port: no retry loop, one line naming what to change.
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1
    assert f"CloudHub cannot serve on 127.0.0.1:{hub.websocket.port}" in stderr.decode()
    assert "in use" in stderr.decode()
