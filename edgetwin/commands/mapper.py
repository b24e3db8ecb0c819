"""``edgetwin mapper <protocol>``: run a device mapper, a separate process that speaks MQTT with the edge.

Each command imports its protocol package (pymodbus, asyncua, bleak) and the SDK inside its function: typer
needs only the signatures, so a mapper process holds its own protocol's libraries and not every command's,
and aiohttp only when it serves ``--metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

from edgetwin.logs import LogLevel, setup_logging
from edgetwin.runtime import run

if TYPE_CHECKING:
    from eventbus import BrokerSettings
    from mappers.sdk import DeviceConfig, Mapper, ProtocolPlugin

log = logging.getLogger(__name__)

app = typer.Typer(
    name="mapper",
    help="Run a device mapper: it drives the devices of one protocol and speaks MQTT with the edge.",
    no_args_is_help=True,
)

BROKER = typer.Option("tcp://127.0.0.1:1883", "--broker", help="MQTT broker of the edge (tcp:// or ssl://).")
NODE = typer.Option(
    None, "--node", help="Edge node name: the mapper asks its membership (required unless --once)."
)
DEVICES = typer.Option(
    None,
    "--devices",
    help="Device + DeviceModel YAML file or directory: drive these devices instead of asking the edge.",
    exists=True,
)
METRICS = typer.Option(
    None, "--metrics", help="host:port serving /healthz and /metrics, e.g. 127.0.0.1:9101."
)
ONCE = typer.Option(
    False, "--once", help="Read every property once, print a table and exit; no MQTT (needs --devices)."
)
PUSH_DATA = typer.Option(
    False, "--push-data", help="Also publish readings on $ke/events/device/.../data/update."
)
LOG_LEVEL = typer.Option(LogLevel.INFO, "--log-level", help="Log level.")


@app.command("modbus")
def modbus(
    broker: str = BROKER,
    node: str | None = NODE,
    devices: Path | None = DEVICES,
    metrics: str | None = METRICS,
    once: bool = ONCE,
    push_data: bool = PUSH_DATA,
    timeout: float = typer.Option(1.0, "--timeout", min=0.01, help="Seconds to wait for a Modbus answer."),
    log_level: LogLevel = LOG_LEVEL,
) -> None:
    """Modbus TCP and RTU devices (pymodbus)."""
    from mappers.modbus import LinkSettings, ModbusProtocol

    plugin = ModbusProtocol(LinkSettings(timeout=timeout))
    run_mapper(plugin, broker, node, devices, metrics, once=once, push_data=push_data, log_level=log_level)


CERT_DIR = typer.Option(
    None,
    "--cert-dir",
    help="Where the mapper keeps its own OPC-UA client certificate, made on first use "
    "(default: $XDG_STATE_HOME/edgetwin/opcua).",
    file_okay=False,
)
OPCUA_TIMEOUT = typer.Option(5.0, "--timeout", min=0.01, help="Seconds to wait for an OPC-UA answer.")
CERTIFICATE = typer.Option(None, "--certificate", help="Client certificate (default: the mapper's own).")
PRIVATE_KEY = typer.Option(None, "--private-key", help="Private key of --certificate.")


@app.command("opcua")
def opcua(
    broker: str = BROKER,
    node: str | None = NODE,
    devices: Path | None = DEVICES,
    metrics: str | None = METRICS,
    once: bool = ONCE,
    push_data: bool = PUSH_DATA,
    cert_dir: Path | None = CERT_DIR,
    timeout: float = OPCUA_TIMEOUT,
    poll: bool = typer.Option(False, "--poll", help="Poll every property; do not subscribe to changes."),
    log_level: LogLevel = LOG_LEVEL,
) -> None:
    """OPC-UA servers (asyncua): subscriptions, or one batched read per cycle where a server has none."""
    from mappers.opcua import OpcUaProtocol, OpcUaSettings, quiet_asyncua

    quiet_asyncua(logging.DEBUG if log_level is LogLevel.DEBUG else logging.CRITICAL)
    plugin = OpcUaProtocol(OpcUaSettings(cert_dir=cert_dir, timeout=timeout, subscribe=not poll))
    run_mapper(plugin, broker, node, devices, metrics, once=once, push_data=push_data, log_level=log_level)


@app.command("opcua-browse")
def opcua_browse(
    endpoint: str = typer.Argument(..., help="The server, e.g. opc.tcp://192.168.1.20:4840/plc."),
    user: str | None = typer.Option(None, "--user", help="User name (anonymous without)."),
    password: str | None = typer.Option(None, "--password", envvar="EDGETWIN_OPCUA_PASSWORD"),
    security_policy: str = typer.Option("None", "--security-policy", help="None, Basic256Sha256, ..."),
    security_mode: str = typer.Option("None", "--security-mode", help="None, Sign or SignAndEncrypt."),
    certificate: Path | None = CERTIFICATE,
    private_key: Path | None = PRIVATE_KEY,
    cert_dir: Path | None = CERT_DIR,
    timeout: float = OPCUA_TIMEOUT,
    standard: bool = typer.Option(False, "--standard", help="Also list namespace 0 (the Server object)."),
) -> None:
    """List a server's variables (node id, browse path, data type, access), to write a Device's YAML."""
    from device_models import ModelValidationError
    from mappers.opcua import OpcUaSettings, browse_table, quiet_asyncua
    from mappers.sdk import MapperError

    quiet_asyncua()
    config: dict[str, object] = {"url": endpoint, "userName": user, "password": password}
    config |= {"securityPolicy": security_policy, "securityMode": security_mode}
    config |= {"certificate": certificate, "privateKey": private_key}
    settings = OpcUaSettings(cert_dir=cert_dir, timeout=timeout)
    try:
        lines = run(browse_table({k: str(v) for k, v in config.items() if v}, settings, standard=standard))
    except ModelValidationError as exc:
        _fail(str(exc))
    except MapperError as exc:
        _fail(str(exc), code=1)
    typer.echo("\n".join(lines))


def run_mapper(
    plugin: ProtocolPlugin,
    broker: str,
    node: str | None,
    devices: Path | None,
    metrics: str | None,
    *,
    once: bool,
    push_data: bool,
    log_level: LogLevel,
) -> None:
    """The body every ``edgetwin mapper <protocol>`` command shares; exits with the process's status."""
    from eventbus import BrokerSettings, EventBusError

    setup_logging(log_level, node=node)
    configs = _load(plugin, devices, node) if devices else None
    if once:
        if configs is None:
            _fail("--once reads the devices given with --devices")
        raise typer.Exit(run(_once(plugin, configs)))
    if node is None:
        _fail("--node is required: the mapper asks the edge node for its devices")
    settings = BrokerSettings(url=broker)
    try:
        run(_serve(plugin, settings, node, configs, metrics, push_data=push_data))
    except EventBusError as exc:
        _fail(str(exc), code=1)


def _fail(message: str, *, code: int = 2) -> NoReturn:
    typer.echo(f"edgetwin mapper: {message}", err=True)
    raise typer.Exit(code)


def _load(plugin: ProtocolPlugin, path: Path, node: str | None) -> list[DeviceConfig]:
    from device_models import ModelValidationError
    from mappers.sdk import load_device_configs

    try:
        configs, refused = load_device_configs(path, node=node, protocol=plugin.name)
    except ModelValidationError as exc:
        _fail(f"{path}:\n{exc}")
    for error in refused:
        typer.echo(f"edgetwin mapper: {error}", err=True)
    if not configs and not refused:
        typer.echo(f"edgetwin mapper: no {plugin.name} device in {path}", err=True)
    return configs


async def _once(plugin: ProtocolPlugin, configs: list[DeviceConfig]) -> int:
    from mappers.sdk import read_once

    rows = await read_once(plugin, configs)
    table = [("DEVICE", "PROPERTY", "VALUE")] + [
        (row.device, row.property, str(row.value) if row.error is None else f"ERROR: {row.error}")
        for row in rows
    ]
    widths = [max(len(line[column]) for line in table) for column in range(2)]
    for device, prop, value in table:
        typer.echo(f"{device:<{widths[0]}}  {prop:<{widths[1]}}  {value}")
    return 1 if any(row.error for row in rows) else 0


async def _serve(
    plugin: ProtocolPlugin,
    settings: BrokerSettings,
    node: str,
    configs: list[DeviceConfig] | None,
    metrics: str | None,
    *,
    push_data: bool,
) -> None:
    from mappers.sdk import Mapper

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    if metrics is None:
        mapper = Mapper(plugin, settings, node=node, devices=configs, push_data=push_data)
        await _run_until(mapper, stopping)
        return
    from edgetwin.observability import HealthReport, ObservabilityError, ObservabilityServer, new_registry

    registry = new_registry()
    mapper = Mapper(plugin, settings, node=node, devices=configs, registry=registry, push_data=push_data)

    def health() -> HealthReport:
        detail = {
            "broker": "connected" if mapper.connected else "disconnected",
            "devices": {
                device: state.value if state else "unknown" for device, state in mapper.devices.items()
            },
            "refused": mapper.refused,
        }
        return HealthReport(healthy=mapper.connected, detail=detail)

    try:
        server = ObservabilityServer(metrics, registry=registry, health=health)
        await server.start()
    except ObservabilityError as exc:
        _fail(str(exc), code=1)
    log.info("serving /healthz and /metrics on %s", server.url)
    try:
        await _run_until(mapper, stopping)
    finally:
        await server.stop()


async def _run_until(mapper: Mapper, stopping: asyncio.Event) -> None:
    try:
        await mapper.start()
        await stopping.wait()
    finally:
        await mapper.stop()


ble_app = typer.Typer(
    name="ble",
    help="Bluetooth Low Energy devices (bleak on BlueZ): run the mapper, or scan and list a device's GATT.",
    invoke_without_command=True,
)
app.add_typer(ble_app)
ADAPTER = typer.Option("hci0", "--adapter", help="BlueZ adapter to use.")


@ble_app.callback()
def ble(
    ctx: typer.Context,
    broker: str = BROKER,
    node: str | None = NODE,
    devices: Path | None = DEVICES,
    metrics: str | None = METRICS,
    once: bool = ONCE,
    push_data: bool = PUSH_DATA,
    adapter: str = ADAPTER,
    timeout: float = typer.Option(5.0, "--timeout", min=0.01, help="Seconds to wait for a read or write."),
    scan_timeout: float = typer.Option(
        10.0, "--scan-timeout", min=0.1, help="Seconds a scan looks for a device not found yet."
    ),
    max_connecting: int = typer.Option(
        2, "--max-connecting", min=1, help="Devices being found or connected at once (adapters handle few)."
    ),
    log_level: LogLevel = LOG_LEVEL,
) -> None:
    """BLE devices (bleak): notifications where characteristics notify, reads on collectCycle otherwise."""
    if ctx.invoked_subcommand is not None:
        return
    from mappers.ble import BleProtocol, BleSettings

    settings = BleSettings(
        adapter=adapter, timeout=timeout, scan_timeout=scan_timeout, max_connecting=max_connecting
    )
    plugin = BleProtocol(settings)
    run_mapper(plugin, broker, node, devices, metrics, once=once, push_data=push_data, log_level=log_level)


@ble_app.command("scan")
def ble_scan(
    adapter: str = ADAPTER,
    timeout: float = typer.Option(5.0, "--timeout", min=0.1, help="Seconds to scan."),
) -> None:
    """List the devices around: address, name, RSSI and advertised services."""
    from mappers.ble import BleSettings, scan_table
    from mappers.sdk import MapperError

    try:
        lines = run(scan_table(BleSettings(adapter=adapter), timeout))
    except MapperError as exc:
        _fail(str(exc), code=1)
    typer.echo("\n".join(lines))


@ble_app.command("gatt")
def ble_gatt(
    address: str = typer.Argument(..., help="The device's MAC address, e.g. A4:C1:38:0D:7E:21."),
    adapter: str = ADAPTER,
    timeout: float = typer.Option(10.0, "--timeout", min=0.1, help="Seconds to find and connect the device."),
) -> None:
    """Connect to a device and list its services and characteristics with their properties."""
    from mappers.ble import BleSettings, gatt_table
    from mappers.sdk import MapperError

    settings = BleSettings(adapter=adapter, scan_timeout=timeout, connect_timeout=timeout)
    try:
        lines = run(gatt_table(address.upper(), settings))
    except MapperError as exc:
        _fail(str(exc), code=1)
    typer.echo("\n".join(lines))
