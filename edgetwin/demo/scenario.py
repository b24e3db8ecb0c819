"""The demo scenario: each step does the real thing (mosquitto, SQLite, pymodbus, a Kubernetes API) and says
what happened, so that a person watching learns how the pieces talk."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from kubernetes import client
from rich.console import Console
from rich.table import Table

from device_models import Device, EdgetwinError, load_documents, new_event_id, now_ms, validate_paths
from edgecore import EdgeCore, parse_config
from edgetwin.demo.boiler import Boiler
from edgetwin.demo.thermostat import Thermostat
from edgetwin.testing import free_port, wait_for
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
BOILER_SETPOINT = "75"
DESIRED_SETPOINT = "24.5"
STEP_TIMEOUT = 20.0

KubeBackend = Literal["auto", "real", "emulator"]


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
        self.console.print(f"\n[bold cyan]{self.number}. {title}[/]")

    def say(self, text: str) -> None:
        self.console.print(f"   {text}", highlight=False)

    def json(self, label: str, body: dict[str, Any]) -> None:
        self.console.print(
            f"   [green]{label}[/] {json.dumps(body, separators=(',', ':'))}", highlight=False, soft_wrap=True
        )


async def run_demo(console: Console, *, kube: KubeBackend = "emulator", workdir: Path | None = None) -> None:
    """Run the whole demo; raises :class:`DemoError` naming the step that did not work."""
    say = _Narrator(console)
    async with contextlib.AsyncExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgetwin-demo-")))
        await _check_examples(say)
        await _kubernetes(say, stack, kube, workdir)
        thermostat = await _thermostat(say, stack)
        boiler = await _boiler(say, stack)
        core = await _edgecore(say, stack, workdir, thermostat.simulator.port, boiler.url)
        await _mappers(say, stack, core.broker_url, workdir)
        app = await stack.enter_async_context(_App(core.broker_url))
        await _reported(say, app)
        await _desired(say, app, thermostat, core.broker_url)
        await _warming(say, app)
        await _opcua(say, app, boiler)
        await _ble(say, stack, app, core)
        await _bad_input(say, app)
        say.step("Stopping everything")
    say.say(
        "done: every step ran against real components "
        "(mosquitto, SQLite, pymodbus, asyncua, a Kubernetes API)"
    )


async def _check_examples(say: _Narrator) -> None:
    say.step("Checking the example Device / DeviceModel files (edgetwin validate examples/)")
    reports = validate_paths([EXAMPLES])
    problems = [problem for report in reports for problem in report.problems if problem.is_error]
    for report in reports:
        say.say(f"{'OK' if report.ok else 'ERROR'}  {report.source}: {report.label}")
    if problems:
        raise DemoError("the shipped examples do not validate:\n" + "\n".join(map(str, problems)))


async def _kubernetes(
    say: _Narrator, stack: contextlib.AsyncExitStack, kube: KubeBackend, workdir: Path
) -> None:
    say.step("Starting a Kubernetes API and registering the devices.kubeedge.io CRDs")
    api = await stack.enter_async_context(start_kube_api(kube, workdir / "kube"))
    kind = "kube-apiserver + etcd" if api.backend == "real" else "embedded emulator (kmock)"
    say.say(f"{kind} at {api.url}; kubeconfig {api.kubeconfig}")
    await asyncio.to_thread(_apply, api)
    say.say(
        f"applied {', '.join(path.name for path in sorted(CRDS.glob('*.yaml')))} "
        "and examples/modbus-tcp-thermostat.yaml"
    )
    if shutil.which("kubectl"):
        process = await asyncio.create_subprocess_exec(
            *api.kubectl("get", "devices", "-n", NAMESPACE),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        say.say("$ kubectl get devices")
        for line in output.decode(errors="replace").splitlines():
            say.say(f"  {line}")
    say.say(
        "[dim]Syncing this CR to the edge is cloudcore's DeviceController (a later release); "
        "below, the edge loads the same files as a standalone gateway.[/]"
    )


def _apply(api: KubeApi) -> None:
    # The blocking kubernetes client runs here, in a worker thread.

    with api.api_client() as api_client:
        extensions = client.ApiextensionsV1Api(api_client)
        for crd in sorted(CRDS.glob("*.yaml")):
            extensions.create_custom_resource_definition(yaml.safe_load(crd.read_text(encoding="utf-8")))
        _wait_established(api_client)
        custom = client.CustomObjectsApi(api_client)
        for obj in load_documents(EXAMPLES / "modbus-tcp-thermostat.yaml"):
            plural = "devices" if isinstance(obj, Device) else "devicemodels"
            custom.create_namespaced_custom_object(
                "devices.kubeedge.io", "v1beta1", NAMESPACE, plural, obj.to_manifest()
            )


def _wait_established(api_client: Any) -> None:

    extensions = client.ApiextensionsV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    for plural in ("devices", "devicemodels"):
        for _ in range(200):
            try:
                custom.list_namespaced_custom_object("devices.kubeedge.io", "v1beta1", NAMESPACE, plural)
                break
            except client.ApiException:
                extensions.list_custom_resource_definition()
        else:
            raise DemoError(f"the CRD {plural}.devices.kubeedge.io never became servable")


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


async def _edgecore(
    say: _Narrator, stack: contextlib.AsyncExitStack, workdir: Path, modbus_port: int, opcua_url: str
) -> EdgeCore:
    say.step("Starting edgecore: its own mosquitto (EventBus) and the DeviceTwin on SQLite")
    devices = workdir / "devices"
    devices.mkdir(parents=True, exist_ok=True)
    # The shipped examples, pointed at the simulators' ports.
    _write_example(devices, "modbus-tcp-thermostat.yaml", {"port": str(modbus_port)})
    _write_example(devices, "opcua-boiler.yaml", {"url": opcua_url})
    mqtt_port = free_port()
    config = parse_config(
        {
            "apiVersion": "edgecore.config.kubeedge.io/v1alpha2",
            "kind": "EdgeCore",
            "database": {"dataSource": str(workdir / "edgecore.db")},
            "modules": {
                "edged": {"hostnameOverride": NODE},
                "eventBus": {"mqttMode": 0, "mqttServerInternal": f"tcp://127.0.0.1:{mqtt_port}"},
            },
            "edgetwin": {"healthz": ""},
        },
        "demo",
    )
    core = await stack.enter_async_context(EdgeCore(config, devices_dir=devices))
    say.say(f"node {NODE}; mosquitto on {core.broker_url}; twins in {workdir / 'edgecore.db'} (WAL)")
    say.say(f"devices {DEVICE} and {BOILER} loaded from {devices}: known to the twin before any report")
    return core


def _write_example(directory: Path, name: str, config_data: dict[str, Any]) -> None:
    documents: list[dict[str, Any]] = []
    for obj in load_documents(EXAMPLES / name):
        manifest = obj.to_manifest()
        if isinstance(obj, Device):
            manifest["spec"]["protocol"]["configData"].update(config_data)
        documents.append(manifest)
    (directory / name).write_text(yaml.safe_dump_all(documents, sort_keys=False), encoding="utf-8")


async def _mappers(say: _Narrator, stack: contextlib.AsyncExitStack, broker_url: str, workdir: Path) -> None:
    say.step("Starting the Modbus and OPC-UA mappers (they speak only MQTT with the edge)")
    plugins: list[ProtocolPlugin] = [
        ModbusProtocol(),
        OpcUaProtocol(OpcUaSettings(cert_dir=workdir / "opcua-pki")),
    ]
    for plugin in plugins:
        mapper = Mapper(plugin, BrokerSettings(url=broker_url), node=NODE)
        await mapper.start()
        stack.push_async_callback(mapper.stop)
        try:
            await mapper.wait_membership(timeout=STEP_TIMEOUT)
        except (TimeoutError, EdgetwinError) as exc:
            raise DemoError(f"the {plugin.name} mapper did not learn its devices: {exc}") from exc
        say.say(
            f"{plugin.name} mapper: learnt {', '.join(mapper.devices)} from "
            f"$hw/events/node/{NODE}/membership/get/result (Device spec + DeviceModel included)"
        )


async def _reported(say: _Narrator, app: _App) -> None:
    say.step("Reported state: the mapper reads the registers and publishes twin/update (actual values)")

    async def reported() -> dict[str, Any] | None:
        twin = await app.get_twin()
        return twin if _actual(twin, "temperature") and _actual(twin, "setpoint") else None

    twin = await wait_for(reported, timeout=STEP_TIMEOUT, what="the first reported values")
    say.say(
        f"twin/get: temperature = {_actual(twin, 'temperature')} °C, "
        f"setpoint = {_actual(twin, 'setpoint')} °C"
    )


async def _desired(say: _Narrator, app: _App, thermostat: Thermostat, broker_url: str) -> None:
    say.step(f"Desired state: an app sets setpoint = {DESIRED_SETPOINT} with mosquitto_pub")
    event_id = "demo-set-setpoint"
    body = _update(event_id, "setpoint", DESIRED_SETPOINT)
    await _publish_as_app(say, app, broker_url, app.topic(TopicKind.TWIN_UPDATE), body)
    say.json(
        "twin/update/result  ",
        await app.expect(TopicKind.TWIN_UPDATE_RESULT, lambda b: b.get("event_id") == event_id, "the result"),
    )
    say.json(
        "twin/update/document",
        await app.expect(
            TopicKind.TWIN_UPDATE_DOCUMENT, lambda b: b.get("event_id") == event_id, "the document"
        ),
    )
    say.json(
        "twin/update/delta   ",
        await app.expect(
            TopicKind.TWIN_UPDATE_DELTA,
            lambda b: (b.get("delta") or {}).get("setpoint") == DESIRED_SETPOINT,
            "the delta",
        ),
    )
    try:
        await wait_for(
            lambda: _register_is(thermostat, float(DESIRED_SETPOINT)),
            timeout=STEP_TIMEOUT,
            what="the register",
        )
    except AssertionError as exc:
        raise DemoError(f"the mapper did not write the setpoint register: {exc}") from exc
    say.say(f"the mapper wrote holding register 0 = {round(float(DESIRED_SETPOINT) * 10)} (scale 0.1)")

    async def converged() -> dict[str, Any] | None:
        twin = await app.get_twin()
        return twin if _actual(twin, "setpoint") == DESIRED_SETPOINT else None

    twin = await wait_for(converged, timeout=STEP_TIMEOUT, what="the setpoint read back")
    table = Table("property", "expected (desired)", "actual (reported)", box=None, padding=(0, 2))
    for prop in sorted(twin):
        table.add_row(prop, _expected(twin, prop) or "-", _actual(twin, prop) or "-")
    say.say("twin/get now returns both sides:")
    say.console.print(table)


async def _warming(say: _Narrator, app: _App) -> None:
    say.step("The device acts on it: the thermostat switches its relay and the room warms up")
    start = float(_actual(await app.get_twin(), "temperature") or 0)

    async def warmer() -> dict[str, Any] | None:
        twin = await app.get_twin()
        heating, temperature = _actual(twin, "heating"), _actual(twin, "temperature")
        return twin if heating == "true" and float(temperature or 0) >= start + 1.0 else None

    twin = await wait_for(warmer, timeout=STEP_TIMEOUT, what="the room to warm up by 1 °C")
    say.say(
        f"reported by the mapper: heating = {_actual(twin, 'heating')}, "
        f"temperature {start:.1f} → {_actual(twin, 'temperature')} °C"
    )


async def _opcua(say: _Narrator, app: _App, boiler: Boiler) -> None:
    say.step(f"OPC-UA: the boiler reports by subscription; an app sets its setpoint to {BOILER_SETPOINT}")

    async def reported() -> dict[str, Any] | None:
        twin = await app.get_twin(BOILER)
        return twin if _actual(twin, "temperature") and _actual(twin, "pressure") else None

    twin = await wait_for(reported, timeout=STEP_TIMEOUT, what="the boiler's reported values")
    say.say(
        f"twin/get {BOILER}: temperature = {_actual(twin, 'temperature')} °C, "
        f"pressure = {_actual(twin, 'pressure')} bar, setpoint = {_actual(twin, 'setpoint')} °C"
    )
    event_id = "demo-boiler-setpoint"
    await app.client.publish(
        app.topic(TopicKind.TWIN_UPDATE, BOILER), json.dumps(_update(event_id, "setpoint", BOILER_SETPOINT))
    )
    await app.expect(
        TopicKind.TWIN_UPDATE_DELTA,
        lambda b: (b.get("delta") or {}).get("setpoint") == BOILER_SETPOINT,
        "the boiler's delta",
        BOILER,
    )

    async def written() -> bool:
        return abs(await boiler.setpoint() - float(BOILER_SETPOINT)) < 0.01

    try:
        await wait_for(written, timeout=STEP_TIMEOUT, what="the Boiler.Setpoint node")
    except AssertionError as exc:
        raise DemoError(f"the OPC-UA mapper did not write the setpoint node: {exc}") from exc

    async def converged() -> dict[str, Any] | None:
        twin = await app.get_twin(BOILER)
        actual = _actual(twin, "setpoint")
        return twin if actual is not None and float(actual) == float(BOILER_SETPOINT) else None

    twin = await wait_for(converged, timeout=STEP_TIMEOUT, what="the boiler setpoint read back")
    say.say(
        f"the mapper wrote ns=2;s=Boiler.Setpoint = {await boiler.setpoint():g} "
        f"(Double, as the node declares); reported back: setpoint = {_actual(twin, 'setpoint')}"
    )


async def _ble(say: _Narrator, stack: contextlib.AsyncExitStack, app: _App, core: EdgeCore) -> None:
    """The BLE thermometer of examples/ble-thermometer.yaml, on an emulated BlueZ (skipped without dbus)."""
    # Imported here, with the BLE step, so that this part of the demo stays in one place.
    from edgecore.devices import twin_device
    from edgetwin.demo.ble import DemoThermometer, example_device, unavailable
    from mappers.ble import BleProtocol

    say.step("BLE: a thermometer on an emulated BlueZ (bluezoo on a private D-Bus); bleak runs unchanged")
    reason = unavailable()
    if reason is not None:
        say.say(f"[yellow]BLE part skipped: {reason}[/]")
        return
    example = EXAMPLES / "ble-thermometer.yaml"
    device, model = example_device(example)
    thermometer = await stack.enter_async_context(DemoThermometer(device))
    await core.twin.upsert_device(twin_device(device, model, source=example))
    mapper = Mapper(BleProtocol(), BrokerSettings(url=core.broker_url), node=NODE)
    await mapper.start()
    stack.push_async_callback(mapper.stop)
    name = device.metadata.name

    async def temperature(value: str) -> dict[str, Any] | None:
        twin = await app.get_twin(name)
        return twin if _actual(twin, "temperature") == value else None

    await wait_for(lambda: temperature("21.5"), timeout=STEP_TIMEOUT, what="the BLE temperature")
    say.say(
        f"ble mapper: learnt {NAMESPACE}/{name}, found {thermometer.address} by a scan on hci0; "
        "twin/get: temperature = 21.5 °C (0x2A6E bytes 66 08, bytes 1 then 0, x 0.01)"
    )
    await thermometer.set_temperature(23.4)
    await wait_for(lambda: temperature("23.4"), timeout=STEP_TIMEOUT, what="the notified temperature")
    say.say("the thermometer notified 23.4 °C: twin actual temperature = 23.4 at once (start_notify)")
    await app.client.publish(
        app.topic(TopicKind.TWIN_UPDATE, name), json.dumps(_update("demo-led", "led", "ON"))
    )
    await thermometer.wait_led_write(b"\x01", timeout=STEP_TIMEOUT)

    async def led_on() -> dict[str, Any] | None:
        twin = await app.get_twin(name)
        return twin if _actual(twin, "led") == "ON" else None

    await wait_for(led_on, timeout=STEP_TIMEOUT, what="the LED read back")
    say.say(
        "desired led = ON: the mapper wrote 01 (dataWrite) to the LED characteristic; reported back: led = ON"
    )


async def _register_is(thermostat: Thermostat, value: float) -> bool:
    return abs(await thermostat.setpoint() - value) < 0.05


async def _publish_as_app(
    say: _Narrator, app: _App, broker_url: str, topic: str, body: dict[str, Any]
) -> None:
    payload = json.dumps(body)
    tool = shutil.which("mosquitto_pub")
    if tool is None:
        say.say(
            "[yellow]mosquitto_pub not found (Debian package mosquitto-clients); publishing from Python[/]"
        )
        await app.client.publish(topic, payload)
        return
    port = broker_url.rsplit(":", 1)[1]
    say.say(f"$ mosquitto_pub -p {port} -q 1 -t '{topic}' -m '{payload}'")
    process = await asyncio.create_subprocess_exec(
        tool, "-h", "127.0.0.1", "-p", port, "-q", "1", "-t", topic, "-m", payload
    )
    if await process.wait() != 0:
        raise DemoError(f"mosquitto_pub exited with {process.returncode}")


async def _bad_input(say: _Narrator, app: _App) -> None:
    say.step("Bad input gets a clear answer on the result topic, and the edge keeps serving")
    event_id = "demo-bad-value"
    body = _update(event_id, "setpoint", "warm")
    await app.client.publish(app.topic(TopicKind.TWIN_UPDATE), json.dumps(body))
    say.json("sent    ", body)
    say.json(
        "answered",
        await app.expect(TopicKind.TWIN_UPDATE_RESULT, lambda b: b.get("event_id") == event_id, "the error"),
    )
