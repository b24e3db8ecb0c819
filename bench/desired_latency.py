"""Desired-value latency through the device chain, and status-patch coalescing; prints one JSON document.

Chain, all real and as a user runs it: a Kubernetes API (``--kube auto|real|emulator``) with the
devices.kubeedge.io CRDs -> cloudcore in-process (DeviceController, CloudHub: websocket + mutual TLS on
loopback) -> an edge joined with ``edgetwin join`` and run from the edgecore.yaml it wrote (EdgeHub,
DeviceSync, DeviceTwin on SQLite, its own mosquitto) -> the Modbus mapper (learns the Device through
membership) -> a pymodbus server (the simulated thermostat's holding register 0).

* ``latency``: 100 sequential ``spec.properties[setpoint].desired.value`` patches (the Python client);
  for each, the time from sending the PATCH request to the holding register holding the value: p50 / p99
  (goal <= 20 / 50 ms).
* ``coalescing``: 1,000 Devices on one node; edge reports (``twin/edge_updated``) for random devices are
  handed to the DeviceController directly (not through the link: 1,000 devices would need 1,000 mapped
  devices and simulators to produce the reports) as fast as it takes them for a few seconds: reports
  received per second against status patches per second sent to the API (coalesced per device every
  ``status_interval``).

Run: ``.venv/bin/python bench/desired_latency.py [--kube emulator]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from prometheus_client import CollectorRegistry

from cloudcore.devices import DeviceController
from cloudsync import Message, Operation
from device_models import MsgTwin, TwinSync, TwinValue, TwinVersion, TypeMetadata, ValueMetadata, now_ms
from edgecore import EdgeCore, EdgeCoreConfig, dump_config
from edgetwin.testing import free_port, wait_for
from edgetwin.testing.cluster import cloud_config, join_edge, running_cloud
from edgetwin.testing.kubeapi import KubeApi, start_kube_api
from edgetwin.testing.modbus import ModbusTcpSimulator
from eventbus import BrokerSettings
from mappers.modbus import ModbusProtocol
from mappers.sdk import Mapper

REPO = Path(__file__).resolve().parents[1]
EDGETWIN = shutil.which("edgetwin", path=str(Path(sys.executable).parent)) or "edgetwin"
EXAMPLE = REPO / "examples" / "modbus-tcp-thermostat.yaml"
GROUP, VERSION = "devices.kubeedge.io", "v1beta1"
NODE = "bench-node"
PATCHES = 100
MANY = 1000
REPORT_SECONDS = 3.0
STATUS_INTERVAL = 0.2


def example(kind: str, namespace: str) -> dict[str, Any]:
    obj: dict[str, Any] = copy.deepcopy(
        next(doc for doc in yaml.safe_load_all(EXAMPLE.read_text()) if doc["kind"] == kind)
    )
    obj["metadata"]["namespace"] = namespace
    return obj


def install_crds(api: KubeApi, namespaces: list[str]) -> None:
    with api.api_client() as api_client:
        extensions = k8s.ApiextensionsV1Api(api_client)
        for path in sorted((REPO / "device_models" / "crds").glob("*.yaml")):
            with contextlib.suppress(k8s.ApiException):
                extensions.create_custom_resource_definition(yaml.safe_load(path.read_text()))
        core = k8s.CoreV1Api(api_client)
        for namespace in namespaces:
            core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))
        custom = k8s.CustomObjectsApi(api_client)
        deadline = time.monotonic() + 60
        served = False
        while not served:
            try:
                custom.list_namespaced_custom_object(GROUP, VERSION, namespaces[0], "devices")
                custom.list_namespaced_custom_object(GROUP, VERSION, namespaces[0], "devicemodels")
            except k8s.ApiException:
                if time.monotonic() > deadline:
                    raise
            else:
                served = True


@contextlib.asynccontextmanager
async def edge_processes(edge_config: EdgeCoreConfig, workdir: Path) -> AsyncIterator[None]:
    """edgecore and the Modbus mapper as their own processes, started the way a user starts them."""
    config_file = workdir / "edgecore.yaml"
    config_file.write_text(dump_config(edge_config))
    processes: list[asyncio.subprocess.Process] = []
    try:
        with (workdir / "edgecore.log").open("wb") as log:
            processes.append(
                await asyncio.create_subprocess_exec(
                    EDGETWIN, "edgecore", "--config", str(config_file), stdout=log, stderr=log
                )
            )
        broker = edge_config.modules.event_bus.mqtt_server_internal
        with (workdir / "mapper.log").open("wb") as log:
            processes.append(
                await asyncio.create_subprocess_exec(
                    EDGETWIN, "mapper", "modbus", "--broker", broker, "--node", NODE, stdout=log, stderr=log
                )
            )
        yield
    finally:
        for process in reversed(processes):
            if process.returncode is None:
                process.terminate()
                await process.wait()


@contextlib.asynccontextmanager
async def edge_in_process(edge_config: EdgeCoreConfig) -> AsyncIterator[None]:
    """edgecore and the Modbus mapper in this process, on this event loop."""
    async with EdgeCore(edge_config) as edge:
        mapper = Mapper(ModbusProtocol(), BrokerSettings(url=edge.broker_url), node=NODE)
        await mapper.start()
        try:
            yield
        finally:
            await mapper.stop()


async def latency(api: KubeApi, workdir: Path, *, processes: bool) -> dict[str, Any]:
    namespace = "bench" if processes else "bench-one"
    async with contextlib.AsyncExitStack() as stack:
        simulator = await stack.enter_async_context(ModbusTcpSimulator([1], port=free_port()))
        api_client = stack.enter_context(api.api_client())
        custom = k8s.CustomObjectsApi(api_client)
        cloud = await stack.enter_async_context(running_cloud(api_client, cloud_config(namespace)))
        edge_config = await asyncio.to_thread(join_edge, cloud, NODE, workdir / namespace)
        await stack.enter_async_context(
            edge_processes(edge_config, workdir / namespace) if processes else edge_in_process(edge_config)
        )

        device = example("Device", namespace)
        device["spec"]["nodeName"] = NODE
        device["spec"]["protocol"]["configData"].update(simulator.config_data(1))
        for plural, obj in (("devicemodels", example("DeviceModel", namespace)), ("devices", device)):
            await asyncio.to_thread(
                custom.create_namespaced_custom_object, GROUP, VERSION, namespace, plural, obj
            )

        async def register_is(raw: int) -> bool:
            return (await simulator.get_holding(1, 0))[0] == raw

        await wait_for(lambda: register_is(215), 60.0, what="the first desired value written")
        seen = stack.enter_context(watched_desired(api, namespace))
        samples, api_samples = [], []
        for index in range(PATCHES):
            value = 200 + index  # 20.0 .. 29.9 °C, each different from the one before
            patch = [
                {"op": "replace", "path": "/spec/properties/1/desired/value", "value": f"{value / 10:.1f}"}
            ]
            started = time.perf_counter()
            await asyncio.to_thread(
                custom.patch_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                "devices",
                "thermostat-01",
                patch,
                _content_type="application/json-patch+json",
            )
            await wait_for(partial(register_is, value), 10.0, interval=0.0005, what=f"register = {value}")
            samples.append((time.perf_counter() - started) * 1000)
            text = f"{value / 10:.1f}"
            await wait_for(partial(seen.__contains__, text), 10.0, what=f"a watch event for {text}")
            api_samples.append((seen[text] - started) * 1000)
    cuts = statistics.quantiles(samples, n=100)
    api_cuts = statistics.quantiles(api_samples, n=100)
    return {
        "edge": "edgecore and mapper processes" if processes else "edgecore and mapper in the bench process",
        "patches": PATCHES,
        "p50_ms": round(cuts[49], 2),
        "p99_ms": round(cuts[98], 2),
        "max_ms": round(max(samples), 2),
        "baseline_patch_to_watch_event": {"p50_ms": round(api_cuts[49], 2), "p99_ms": round(api_cuts[98], 2)},
    }


@contextlib.contextmanager
def watched_desired(api: KubeApi, namespace: str) -> Iterator[dict[str, float]]:
    """The Kubernetes API's own share: when a plain watch (in a thread, as cloudcore's) first sees each
    desired value of the thermostat's setpoint; ``perf_counter`` times by value."""
    seen: dict[str, float] = {}
    stop = threading.Event()

    def run() -> None:
        with api.api_client() as api_client:
            custom = k8s.CustomObjectsApi(api_client)
            while not stop.is_set():
                stream = k8s_watch.Watch().stream(  # type: ignore[no-untyped-call]
                    custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    namespace,
                    "devices",
                    timeout_seconds=1,
                )
                for event in stream:
                    now = time.perf_counter()
                    for prop in event["object"]["spec"].get("properties", []):
                        value = (prop.get("desired") or {}).get("value")
                        if prop.get("name") == "setpoint" and value is not None:
                            seen.setdefault(value, now)

    thread = threading.Thread(target=run, name="baseline-watch", daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(5)


async def coalescing(api: KubeApi) -> dict[str, Any]:
    namespace = "bench-many"
    with api.api_client() as api_client:
        custom = k8s.CustomObjectsApi(api_client)
        model = example("DeviceModel", namespace)
        await asyncio.to_thread(
            custom.create_namespaced_custom_object, GROUP, VERSION, namespace, "devicemodels", model
        )
        template = example("Device", namespace)
        template["spec"]["nodeName"] = NODE

        def create(index: int) -> None:
            device = copy.deepcopy(template)
            device["metadata"]["name"] = f"thermostat-{index:04d}"
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "devices", device)

        for start in range(0, MANY, 50):
            await asyncio.gather(
                *(asyncio.to_thread(create, index) for index in range(start, min(start + 50, MANY)))
            )

        async def ignore(node: str, message: Message) -> None:
            return None

        registry = CollectorRegistry()
        controller = DeviceController(
            api_client, ignore, registry=registry, status_interval=STATUS_INTERVAL, namespace=namespace
        )
        await controller.start()
        try:

            def metric(name: str) -> float:
                return registry.get_sample_value(name) or 0.0

            patches_before = metric("edgetwin_devicecontroller_status_patches_total")
            reports = 0
            started = time.perf_counter()
            while time.perf_counter() - started < REPORT_SECONDS:
                for _ in range(200):
                    index = random.randrange(MANY)
                    twin = MsgTwin(
                        actual=TwinValue(
                            value=f"{random.uniform(15, 25):.1f}", metadata=ValueMetadata(timestamp=now_ms())
                        ),
                        metadata=TypeMetadata(type="float"),
                        actual_version=TwinVersion(edge=reports + 1),
                    )
                    content = TwinSync(event_id="b", timestamp=now_ms(), twin={"temperature": twin}).to_dict()
                    message = Message.new(
                        source="twin",
                        group="twin",
                        operation=Operation.UPDATE,
                        resource=f"device/{namespace}/thermostat-{index:04d}/twin/edge_updated",
                        content=content,
                    )
                    await controller.received(NODE, message)
                    reports += 1
                await asyncio.sleep(0)  # let the status writer and the watches run
            elapsed = time.perf_counter() - started
            patches = metric("edgetwin_devicecontroller_status_patches_total") - patches_before
        finally:
            await controller.stop()
    return {
        "devices": MANY,
        "seconds": round(elapsed, 2),
        "reports_per_second": round(reports / elapsed, 1),
        "status_patches_per_second": round(patches / elapsed, 1),
        "status_interval_s": STATUS_INTERVAL,
        "conflicts": registry.get_sample_value("edgetwin_devicecontroller_status_conflicts_total") or 0.0,
    }


async def main(kube: str) -> None:
    with tempfile.TemporaryDirectory(prefix="desired-latency-") as tmp:
        workdir = Path(tmp)
        async with start_kube_api(kube, workdir / "kube") as api:  # type: ignore[arg-type]
            await asyncio.to_thread(install_crds, api, ["bench", "bench-one", "bench-many"])
            result = {
                "backend": api.backend,
                "link": "CloudHub/EdgeHub websocket + mutual TLS on loopback",
                "latency": await latency(api, workdir, processes=True),
                "latency_one_process": await latency(api, workdir, processes=False),
                "coalescing": await coalescing(api),
            }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kube", choices=("auto", "real", "emulator"), default="auto")
    asyncio.run(main(parser.parse_args().kube))
