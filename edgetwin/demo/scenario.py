"""The demo scenario: each step does the real thing and says what happened, so that a person watching learns
how the pieces talk.

The device path is the one users take: the Device / DeviceModel CRs go into a Kubernetes API; cloudcore runs
(in this process) against it; ``edgetwin gettoken`` and ``edgetwin join`` make an edge node; edgecore runs
from the edgecore.yaml that join wrote; the mappers learn their devices from the edge (membership), which
learnt them from cloudcore; ``kubectl patch device`` sets desired values, and the reported values come back in
the Device's status. The simulated devices are real protocol servers (pymodbus, asyncua, BlueZ emulated by
bluezoo).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import shutil
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Literal

import kubernetes.client as k8s
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.testing import CliRunner

from cloudcore import CloudCore
from cloudcore.kube import request
from device_models import Device, EdgetwinError, load_documents, new_event_id, now_ms, validate_paths
from edgecore import EdgeCore, EdgeCoreConfig
from edgetwin.demo.boiler import Boiler
from edgetwin.demo.thermostat import Thermostat
from edgetwin.testing import free_port, wait_for
from edgetwin.testing.cluster import cloud_config, join_edge, running_cloud
from edgetwin.testing.kubeapi import KubeApi, start_kube_api
from eventbus import BrokerSettings, MqttClient, MqttMessage
from eventbus.topics import TopicKind, device_topic
from mappers.modbus import ModbusProtocol
from mappers.opcua import OpcUaProtocol, OpcUaSettings
from mappers.sdk import Mapper, ProtocolPlugin

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
CRDS = REPO / "device_models" / "crds"
NODE = "edge-node-1"
NAMESPACE, DEVICE, BOILER = "default", "thermostat-01", "boiler-01"
#: Where cloudcore keeps its CA and token key (KubeEdge's namespace).
CLOUD_NAMESPACE = "kubeedge"
GROUP, VERSION = "devices.kubeedge.io", "v1beta1"
# Positions in spec.properties of the examples, for the JSON patches.
THERMOSTAT_SETPOINT, BOILER_SETPOINT_INDEX, BLE_LED = 1, 2, 1
BOILER_SETPOINT = "75"
DESIRED_SETPOINT = "24.5"
WINDOW_TEMPERATURE = "12.0"
STEP_TIMEOUT = 20.0

KubeBackend = Literal["auto", "real", "emulator"]
JsonObject = dict[str, Any]


class DemoError(EdgetwinError):
    """A demo step did not reach its expected outcome; the message says which and what was seen."""


class _App:
    """An MQTT app as a KubeEdge user would write one: publishes to and listens on the device's topics."""

    def __init__(self, url: str) -> None:
        self.client = MqttClient(BrokerSettings(url=url), client_id="demo-app")
        self.seen: list[MqttMessage] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> _App:
        await self.client.start()
        await self.client.subscribe(f"$hw/events/device/{NAMESPACE}/+/#")
        self._task = asyncio.create_task(self._collect(), name="demo-app")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.stop()
        if self._task is not None:
            await self._task

    async def _collect(self) -> None:
        async for message in self.client.messages():
            self.seen.append(message)

    def topic(self, kind: TopicKind, device: str = DEVICE) -> str:
        return device_topic(kind, NAMESPACE, device)

    async def expect(
        self,
        kind: TopicKind,
        predicate: Callable[[dict[str, Any]], bool],
        what: str,
        device: str = DEVICE,
    ) -> dict[str, Any]:
        """The first message on the device's ``kind`` topic whose JSON body satisfies ``predicate``."""
        topic = self.topic(kind, device)

        def found() -> dict[str, Any] | None:
            for message in self.seen:
                if message.topic == topic:
                    body: dict[str, Any] = json.loads(message.payload)
                    if predicate(body):
                        return body
            return None

        try:
            body = await wait_for(found, timeout=STEP_TIMEOUT, what=what)
        except AssertionError as exc:
            raise DemoError(f"{what}: {exc}") from exc
        return body or {}

    async def get_twin(self, device: str = DEVICE) -> dict[str, Any]:
        """Ask the edge for the twin (``twin/get``) and return its ``twin`` map."""
        event_id = new_event_id()
        await self.client.publish(
            self.topic(TopicKind.TWIN_GET, device),
            json.dumps({"event_id": event_id, "timestamp": now_ms()}),
        )
        body = await self.expect(
            TopicKind.TWIN_GET_RESULT, lambda b: b.get("event_id") == event_id, "twin/get/result", device
        )
        twin: dict[str, Any] = body.get("twin") or {}
        return twin


def _update(event_id: str, prop: str, value: str) -> dict[str, Any]:
    return {"event_id": event_id, "timestamp": now_ms(), "twin": {prop: {"expected": {"value": value}}}}


def _actual(twin: dict[str, Any], prop: str) -> str | None:
    value = ((twin.get(prop) or {}).get("actual") or {}).get("value")
    return str(value) if value is not None else None


def _expected(twin: dict[str, Any], prop: str) -> str | None:
    value = ((twin.get(prop) or {}).get("expected") or {}).get("value")
    return str(value) if value is not None else None


class _Narrator:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.number = 0

    def step(self, title: str) -> None:
        self.number += 1
        self.console.print(f"\n[bold cyan]{self.number}. {escape(title)}[/]")

    def say(self, text: str) -> None:
        self.console.print(f"   {text}", highlight=False)

    def plain(self, text: str) -> None:
        """Text from outside (command output, API messages): printed as it is, no markup."""
        self.say(escape(text))

    def json(self, label: str, body: dict[str, Any]) -> None:
        self.console.print(
            f"   [green]{label}[/] {escape(json.dumps(body, separators=(',', ':')))}",
            highlight=False,
            soft_wrap=True,
        )


class _Cluster:
    """The Kubernetes API of the demo: its handle (kubeconfig, kubectl) and a Python client."""

    def __init__(self, api: KubeApi, client: k8s.ApiClient) -> None:
        self.api = api
        self.client = client

    async def device(self, name: str) -> JsonObject:
        """The Device ``default/<name>`` as the API holds it."""
        return await request(self.client, "GET", _device_path(name))

    async def kubectl(self, say: _Narrator, *args: str) -> None:
        """Print ``$ kubectl <args>``, run it (when kubectl is installed) and print its output."""
        say.plain(f"$ kubectl {shlex.join(args)}")
        if shutil.which("kubectl") is None:
            say.say("[yellow]kubectl not found; skipped[/]")
            return
        process = await asyncio.create_subprocess_exec(
            *self.api.kubectl(*args), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        output, _ = await process.communicate()
        for line in output.decode(errors="replace").splitlines():
            say.plain(f"  {line}")
        if process.returncode != 0:
            raise DemoError(f"kubectl {' '.join(args)} exited with {process.returncode}")

    async def set_desired(self, say: _Narrator, name: str, index: int, value: str) -> None:
        """``kubectl patch device`` (a JSON patch of ``spec.properties[index].desired.value``)."""
        patch = [{"op": "replace", "path": f"/spec/properties/{index}/desired/value", "value": value}]
        if shutil.which("kubectl") is not None:
            await self.kubectl(say, "patch", "device", name, "--type", "json", "-p", json.dumps(patch))
            return
        say.plain(f"$ kubectl patch device {name} --type json -p {shlex.quote(json.dumps(patch))}")
        say.say("[yellow]kubectl not found: the same patch sent with the Python client[/]")
        await request(
            self.client, "PATCH", _device_path(name), body=patch, content_type="application/json-patch+json"
        )

    async def status(self, name: str, check: Callable[[JsonObject], bool], what: str) -> JsonObject:
        """Wait until the Device's status passes ``check``; the Device."""

        async def passed() -> JsonObject | None:
            device = await self.device(name)
            return device if check(device.get("status") or {}) else None

        device: JsonObject = await _wait(passed, what)
        return device


def _device_path(name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/devices/{name}"


def _status_twin(status: JsonObject, prop: str, side: str) -> str | None:
    """``status.twins[propertyName=prop].<side>.value`` (side: reported, observedDesired)."""
    for twin in status.get("twins") or []:
        if twin.get("propertyName") == prop:
            value = (twin.get(side) or {}).get("value")
            return str(value) if value is not None else None
    return None


def _print_status(say: _Narrator, device: JsonObject) -> None:
    status = device.get("status") or {}
    table = Table("property", "reported", "observedDesired", box=None, padding=(0, 2))
    for prop in sorted(twin["propertyName"] for twin in status.get("twins") or []):
        table.add_row(
            prop,
            _status_twin(status, prop, "reported") or "-",
            _status_twin(status, prop, "observedDesired") or "-",
        )
    name = device["metadata"]["name"]
    say.say(f"Device {name} status (kubectl get device {name} -o yaml):")
    say.console.print(table)
    say.say(f"state: {status.get('state', '-')}, lastOnlineTime: {status.get('lastOnlineTime', '-')}")


async def run_demo(console: Console, *, kube: KubeBackend = "emulator", workdir: Path | None = None) -> None:
    """Run the whole demo; raises :class:`DemoError` naming the step that did not work."""
    say = _Narrator(console)
    async with contextlib.AsyncExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgetwin-demo-")))
        await _check_examples(say)
        thermostat = await _thermostat(say, stack)
        boiler = await _boiler(say, stack)
        cluster = await _kubernetes(say, stack, kube, workdir, thermostat.simulator.port, boiler.url)
        cloud = await _cloudcore(say, stack, cluster)
        token = await _gettoken(say, cluster)
        config = await _join(say, cloud, token, workdir)
        core = await _edgecore(say, stack, cluster, config)
        await _mappers(say, stack, core.broker_url, workdir)
        app = await stack.enter_async_context(_App(core.broker_url))
        await _reported(say, app, cluster)
        await _desired(say, app, cluster, thermostat)
        await _warming(say, app)
        await _device_side(say, cluster, thermostat)
        await _opcua(say, app, cluster, boiler)
        await _ble(say, stack, app, cluster, core)
        await _bad_input(say, app, cluster, thermostat)
        say.step("Stopping everything")
    say.say(
        "done: every step ran against real components "
        "(cloudcore, edgecore, mosquitto, SQLite, pymodbus, asyncua, a Kubernetes API)"
    )


async def _check_examples(say: _Narrator) -> None:
    say.step("Checking the example Device / DeviceModel files (edgetwin validate examples/)")
    reports = validate_paths([EXAMPLES])
    problems = [problem for report in reports for problem in report.problems if problem.is_error]
    for report in reports:
        say.plain(f"{'OK' if report.ok else 'ERROR'}  {report.source}: {report.label}")
    if problems:
        raise DemoError("the shipped examples do not validate:\n" + "\n".join(map(str, problems)))


async def _thermostat(say: _Narrator, stack: contextlib.AsyncExitStack) -> Thermostat:
    say.step("Starting a simulated Modbus TCP thermostat (pymodbus server)")
    thermostat = await stack.enter_async_context(Thermostat(free_port()))
    say.say(
        f"127.0.0.1:{thermostat.simulator.port}: input register 0 = temperature "
        f"{await thermostat.temperature():.1f} °C, "
        f"holding register 0 = setpoint {await thermostat.setpoint():.1f} °C"
    )
    return thermostat


async def _boiler(say: _Narrator, stack: contextlib.AsyncExitStack) -> Boiler:
    say.step("Starting a simulated OPC-UA boiler (asyncua server)")
    boiler = await stack.enter_async_context(Boiler(free_port(), tick=0.2))
    say.say(
        f"{boiler.url}: Boiler.Temperature {await boiler.temperature():.1f} °C drifting towards "
        f"Boiler.Setpoint {await boiler.setpoint():.1f} °C (writable)"
    )
    return boiler


async def _kubernetes(
    say: _Narrator,
    stack: contextlib.AsyncExitStack,
    kube: KubeBackend,
    workdir: Path,
    modbus_port: int,
    opcua_url: str,
) -> _Cluster:
    say.step("Starting a Kubernetes API; applying the devices.kubeedge.io CRDs and the examples")
    api = await stack.enter_async_context(start_kube_api(kube, workdir / "kube"))
    kind = "kube-apiserver + etcd" if api.backend == "real" else "embedded emulator (kmock)"
    say.say(f"{kind} at {api.url}; kubeconfig {api.kubeconfig}")
    cluster = _Cluster(api, stack.enter_context(api.api_client()))
    await asyncio.to_thread(_install_crds, cluster.client)
    say.say(f"applied {', '.join(path.name for path in sorted(CRDS.glob('*.yaml')))}")
    # The shipped examples, pointed at the simulators (the examples name ports of a real site).
    for name, config_data in (
        ("modbus-tcp-thermostat.yaml", {"port": str(modbus_port)}),
        ("opcua-boiler.yaml", {"url": opcua_url}),
    ):
        await _apply_example(cluster, name, config_data)
        say.say(f"applied examples/{name} (configData pointed at the simulator)")
    await cluster.kubectl(say, "get", "devices", "-n", NAMESPACE)
    return cluster


def _install_crds(client: k8s.ApiClient) -> None:
    # The blocking kubernetes client runs here, in a worker thread.
    import yaml

    extensions = k8s.ApiextensionsV1Api(client)
    for crd in sorted(CRDS.glob("*.yaml")):
        extensions.create_custom_resource_definition(yaml.safe_load(crd.read_text(encoding="utf-8")))
    k8s.CoreV1Api(client).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=CLOUD_NAMESPACE)))
    custom = k8s.CustomObjectsApi(client)
    for plural in ("devices", "devicemodels"):
        for _ in range(200):
            try:
                custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural)
                break
            except k8s.ApiException:
                extensions.list_custom_resource_definition()
        else:
            raise DemoError(f"the CRD {plural}.devices.kubeedge.io never became servable")


async def _apply_example(cluster: _Cluster, name: str, config_data: dict[str, Any] | None = None) -> None:
    """Create the DeviceModel and Device of ``examples/<name>``; ``config_data`` goes into the Device's."""
    for obj in load_documents(EXAMPLES / name):
        manifest = obj.to_manifest()
        plural = "devices" if isinstance(obj, Device) else "devicemodels"
        if isinstance(obj, Device) and config_data:
            manifest["spec"]["protocol"]["configData"].update(config_data)
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{plural}"
        await request(cluster.client, "POST", path, body=manifest)


async def _cloudcore(say: _Narrator, stack: contextlib.AsyncExitStack, cluster: _Cluster) -> CloudCore:
    say.step("Starting cloudcore: CA and token key in Secrets, CloudHub (websocket + mTLS), DeviceController")
    config = cloud_config(CLOUD_NAMESPACE)
    cloud = await stack.enter_async_context(running_cloud(cluster.client, config))
    say.say(
        f"CloudHub on 127.0.0.1:{cloud.websocket_port}, certificates on 127.0.0.1:{cloud.https_port}; "
        f"its CA and token key are Secrets in namespace {CLOUD_NAMESPACE}"
    )
    say.say(
        f"the DeviceController lists and watches Devices and DeviceModels: {DEVICE} and {BOILER} wait for "
        f"their node {NODE}"
    )
    return cloud


async def _gettoken(say: _Narrator, cluster: _Cluster) -> str:
    say.step("edgetwin gettoken: a join token minted from cloudcore's Secrets")
    from edgetwin.cli import app

    args = ["gettoken", "--kubeconfig", str(cluster.api.kubeconfig), "--namespace", CLOUD_NAMESPACE]
    say.plain(f"$ edgetwin {shlex.join(args)}")
    result = await asyncio.to_thread(CliRunner().invoke, app, args)
    if result.exit_code != 0:
        raise DemoError(f"edgetwin gettoken exited {result.exit_code}: {result.output}")
    token = result.stdout.strip()
    # A token is a credential: shown only far enough to recognise its shape.
    ca_hash, _, jwt = token.partition(".")
    say.say(f"  {ca_hash[:12]}….{jwt[:12]}…  (sha256 of the CA certificate '.' a JWT valid for 24 h)")
    return token


async def _join(say: _Narrator, cloud: CloudCore, token: str, workdir: Path) -> EdgeCoreConfig:
    say.step(f"edgetwin join: node {NODE} fetches the CA (pinned by the token) and gets its certificate")
    say.plain(
        f"$ edgetwin join --cloudcore-ipport 127.0.0.1:{cloud.websocket_port} --certport {cloud.https_port} "
        f"--token $TOKEN --edgenode-name {NODE} --kubeedge-dir {workdir / 'kubeedge'}"
    )
    try:
        return await asyncio.to_thread(join_edge, cloud, NODE, workdir, token=token, echo=say.plain)
    except AssertionError as exc:
        raise DemoError(str(exc)) from exc


async def _edgecore(
    say: _Narrator, stack: contextlib.AsyncExitStack, cluster: _Cluster, config: EdgeCoreConfig
) -> EdgeCore:
    say.step("Starting edgecore from the edgecore.yaml join wrote: EdgeHub, its own mosquitto, SQLite twin")
    core = await stack.enter_async_context(EdgeCore(config))
    say.say(f"node {NODE}; mosquitto on {core.broker_url}; twins in {config.database.data_source} (WAL)")

    async def ready() -> bool:
        node = await request(cluster.client, "GET", f"/api/v1/nodes/{NODE}")
        conditions = (node.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    await _wait(ready, f"node {NODE} Ready")
    await cluster.kubectl(say, "get", "nodes")

    async def arrived() -> bool:
        return {f"{NAMESPACE}/{DEVICE}", f"{NAMESPACE}/{BOILER}"} <= {d.id for d in core.twin.list_devices()}

    await _wait(arrived, "the devices at the edge")
    say.say(
        "cloudcore sent the node its Devices and DeviceModels; the edge stored them (SQLite) and "
        f"acknowledged: {DEVICE} and {BOILER} are in the twin"
    )
    return core


async def _wait(check: Callable[[], Any], what: str) -> Any:
    condition: Callable[[], object] = check  # wait_for cannot infer its T from a coroutine function
    try:
        return await wait_for(condition, timeout=STEP_TIMEOUT, what=what)
    except AssertionError as exc:
        raise DemoError(f"{what}: {exc}") from exc


async def _mappers(say: _Narrator, stack: contextlib.AsyncExitStack, broker_url: str, workdir: Path) -> None:
    say.step("Starting the Modbus and OPC-UA mappers (they speak only MQTT with the edge)")
    plugins: list[tuple[ProtocolPlugin, str]] = [
        (ModbusProtocol(), DEVICE),
        (OpcUaProtocol(OpcUaSettings(cert_dir=workdir / "opcua-pki")), BOILER),
    ]
    for plugin, device in plugins:
        mapper = Mapper(plugin, BrokerSettings(url=broker_url), node=NODE)
        await mapper.start()
        stack.push_async_callback(mapper.stop)
        await _wait(partial(_drives, mapper, f"{NAMESPACE}/{device}"), f"the {plugin.name} mapper's device")
        say.say(
            f"{plugin.name} mapper: learnt {', '.join(mapper.devices)} from "
            f"$hw/events/node/{NODE}/membership/get/result (Device spec + DeviceModel included)"
        )


def _drives(mapper: Mapper, device_id: str) -> bool:
    return device_id in mapper.devices


async def _reported(say: _Narrator, app: _App, cluster: _Cluster) -> None:
    say.step("Reported state: the mapper reads the registers and publishes twin/update (actual values)")

    async def reported() -> dict[str, Any] | None:
        twin = await app.get_twin()
        return twin if _actual(twin, "temperature") and _actual(twin, "setpoint") else None

    twin = await _wait(reported, "the first reported values")
    say.say(
        f"twin/get: temperature = {_actual(twin, 'temperature')} °C, "
        f"setpoint = {_actual(twin, 'setpoint')} °C"
    )
    say.say("the twin sent them to cloudcore (twin/edge_updated), which patched the Device's status:")
    device = await cluster.status(
        DEVICE,
        lambda status: all(_status_twin(status, p, "reported") for p in ("temperature", "setpoint")),
        "the reported values in the Device status",
    )
    _print_status(say, device)


async def _desired(say: _Narrator, app: _App, cluster: _Cluster, thermostat: Thermostat) -> None:
    say.step(f"Desired state: kubectl patch device {DEVICE}, setpoint = {DESIRED_SETPOINT}")
    await cluster.set_desired(say, DEVICE, THERMOSTAT_SETPOINT, DESIRED_SETPOINT)
    say.say(
        "the DeviceController saw the change (watch), checked it against the DeviceModel and sent "
        "twin/cloud_updated to the node; the edge's twin stored it and told the mapper:"
    )
    say.json(
        "twin/update/delta   ",
        await app.expect(
            TopicKind.TWIN_UPDATE_DELTA,
            lambda b: (b.get("delta") or {}).get("setpoint") == DESIRED_SETPOINT,
            "the delta",
        ),
    )
    await _wait(lambda: _register_is(thermostat, float(DESIRED_SETPOINT)), "the setpoint register written")
    say.say(f"the mapper wrote holding register 0 = {round(float(DESIRED_SETPOINT) * 10)} (scale 0.1)")

    async def converged() -> dict[str, Any] | None:
        twin = await app.get_twin()
        return twin if _actual(twin, "setpoint") == DESIRED_SETPOINT else None

    twin = await _wait(converged, "the setpoint read back")
    table = Table("property", "expected (desired)", "actual (reported)", box=None, padding=(0, 2))
    for prop in sorted(twin):
        table.add_row(prop, _expected(twin, prop) or "-", _actual(twin, prop) or "-")
    say.say("twin/get at the edge now returns both sides:")
    say.console.print(table)
    device = await cluster.status(
        DEVICE,
        lambda status: (
            _status_twin(status, "setpoint", "reported")
            == _status_twin(status, "setpoint", "observedDesired")
            == DESIRED_SETPOINT
        ),
        "the setpoint reported and observed in the Device status",
    )
    _print_status(say, device)


async def _warming(say: _Narrator, app: _App) -> None:
    say.step("The device acts on it: the thermostat switches its relay and the room warms up")
    start = float(_actual(await app.get_twin(), "temperature") or 0)

    async def warmer() -> dict[str, Any] | None:
        twin = await app.get_twin()
        heating, temperature = _actual(twin, "heating"), _actual(twin, "temperature")
        return twin if heating == "true" and float(temperature or 0) >= start + 1.0 else None

    twin = await _wait(warmer, "the room to warm up by 1 °C")
    say.say(
        f"reported by the mapper: heating = {_actual(twin, 'heating')}, "
        f"temperature {start:.1f} → {_actual(twin, 'temperature')} °C"
    )


async def _device_side(say: _Narrator, cluster: _Cluster, thermostat: Thermostat) -> None:
    say.step(f"A change on the device: a window opens, input register 0 drops to {WINDOW_TEMPERATURE} °C")
    with thermostat.held():  # the room's physics would move the value on before it is read
        await thermostat.set_temperature(float(WINDOW_TEMPERATURE))
        device = await cluster.status(
            DEVICE,
            lambda status: _status_twin(status, "temperature", "reported") == WINDOW_TEMPERATURE,
            "the new temperature in the Device status",
        )
    say.plain(
        "mapper (collect cycle) → twin/update → edge twin → twin/edge_updated → cloudcore → status patch: "
        f"status.twins[temperature].reported = {_status_twin(device['status'], 'temperature', 'reported')}"
    )


async def _opcua(say: _Narrator, app: _App, cluster: _Cluster, boiler: Boiler) -> None:
    say.step(
        f"OPC-UA: the boiler reports by subscription; kubectl patch sets its setpoint to {BOILER_SETPOINT}"
    )

    async def reported() -> dict[str, Any] | None:
        twin = await app.get_twin(BOILER)
        return twin if _actual(twin, "temperature") and _actual(twin, "pressure") else None

    twin = await _wait(reported, "the boiler's reported values")
    say.say(
        f"twin/get {BOILER}: temperature = {_actual(twin, 'temperature')} °C, "
        f"pressure = {_actual(twin, 'pressure')} bar, setpoint = {_actual(twin, 'setpoint')} °C"
    )
    await cluster.set_desired(say, BOILER, BOILER_SETPOINT_INDEX, BOILER_SETPOINT)
    await app.expect(
        TopicKind.TWIN_UPDATE_DELTA,
        lambda b: (b.get("delta") or {}).get("setpoint") == BOILER_SETPOINT,
        "the boiler's delta",
        BOILER,
    )

    async def written() -> bool:
        return abs(await boiler.setpoint() - float(BOILER_SETPOINT)) < 0.01

    await _wait(written, "the Boiler.Setpoint node written")

    def converged(status: JsonObject) -> bool:
        actual = _status_twin(status, "setpoint", "reported")
        return actual is not None and float(actual) == float(BOILER_SETPOINT)

    device = await cluster.status(BOILER, converged, "the boiler setpoint in the Device status")
    say.say(
        f"the mapper wrote ns=2;s=Boiler.Setpoint = {await boiler.setpoint():g} "
        f"(Double, as the node declares); reported back: setpoint = "
        f"{_status_twin(device['status'], 'setpoint', 'reported')} in the Device status"
    )


async def _ble(
    say: _Narrator, stack: contextlib.AsyncExitStack, app: _App, cluster: _Cluster, core: EdgeCore
) -> None:
    """The BLE thermometer of examples/ble-thermometer.yaml, on an emulated BlueZ (skipped without dbus)."""
    # Imported here, with the BLE step, so that this part of the demo stays in one place.
    from edgetwin.demo.ble import DemoThermometer, example_device, unavailable
    from mappers.ble import BleProtocol

    say.step("BLE: a thermometer on an emulated BlueZ (bluezoo on a private D-Bus); bleak runs unchanged")
    reason = unavailable()
    if reason is not None:
        say.say(f"[yellow]BLE part skipped: {escape(reason)}[/]")
        return
    device, _ = example_device(EXAMPLES / "ble-thermometer.yaml")
    thermometer = await stack.enter_async_context(DemoThermometer(device))
    await _apply_example(cluster, "ble-thermometer.yaml")
    say.say("applied examples/ble-thermometer.yaml; cloudcore sent it to the node")
    mapper = Mapper(BleProtocol(), BrokerSettings(url=core.broker_url), node=NODE)
    await mapper.start()
    stack.push_async_callback(mapper.stop)
    name = device.metadata.name

    async def temperature(value: str) -> dict[str, Any] | None:
        twin = await app.get_twin(name)
        return twin if _actual(twin, "temperature") == value else None

    await _wait(lambda: temperature("21.5"), "the BLE temperature")
    say.say(
        f"ble mapper: learnt {NAMESPACE}/{name}, found {thermometer.address} by a scan on hci0; "
        "twin/get: temperature = 21.5 °C (0x2A6E bytes 66 08, bytes 1 then 0, x 0.01)"
    )
    await thermometer.set_temperature(23.4)
    await _wait(lambda: temperature("23.4"), "the notified temperature")
    say.say("the thermometer notified 23.4 °C: twin actual temperature = 23.4 at once (start_notify)")
    await cluster.set_desired(say, name, BLE_LED, "ON")
    await thermometer.wait_led_write(b"\x01", timeout=STEP_TIMEOUT)
    await cluster.status(
        name, lambda status: _status_twin(status, "led", "reported") == "ON", "the LED in the Device status"
    )
    say.say(
        "desired led = ON: the mapper wrote 01 (dataWrite) to the LED characteristic; reported back: led = ON"
    )


async def _register_is(thermostat: Thermostat, value: float) -> bool:
    return abs(await thermostat.setpoint() - value) < 0.05


async def _bad_input(say: _Narrator, app: _App, cluster: _Cluster, thermostat: Thermostat) -> None:
    say.step("Bad input gets a clear answer, at the edge and in the cloud, and nothing stops")
    event_id = "demo-bad-value"
    body = _update(event_id, "setpoint", "warm")
    await app.client.publish(app.topic(TopicKind.TWIN_UPDATE), json.dumps(body))
    say.json("an app sent on twin/update", body)
    say.json(
        "the edge answered        ",
        await app.expect(TopicKind.TWIN_UPDATE_RESULT, lambda b: b.get("event_id") == event_id, "the error"),
    )
    await cluster.set_desired(say, DEVICE, THERMOSTAT_SETPOINT, "warm")

    def refused(status: JsonObject) -> bool:
        return any(c["type"] == "Valid" and c["status"] == "False" for c in status.get("conditions") or [])

    device = await cluster.status(DEVICE, refused, "the Valid condition of the Device")
    valid = next(c for c in device["status"]["conditions"] if c["type"] == "Valid")
    say.plain(f"status.conditions[Valid]: {valid['status']}, {valid['reason']}: {valid['message']}")
    twin = await app.get_twin()
    say.say(
        f"(also a Warning Event); not sent to the edge: the twin still expects setpoint = "
        f"{_expected(twin, 'setpoint')}, the register holds {await thermostat.setpoint():.1f}"
    )
