"""``edgetwin mapper <protocol>``: run a device mapper, a separate process that speaks MQTT with the edge."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import NoReturn

import typer

from device_models import ModelValidationError
from edgetwin.logs import LogLevel, setup_logging
from edgetwin.observability import HealthReport, ObservabilityError, ObservabilityServer, new_registry
from eventbus import BrokerSettings, EventBusError
from mappers.modbus import LinkSettings, ModbusProtocol
from mappers.sdk import DeviceConfig, Mapper, ProtocolPlugin, load_device_configs, read_once

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
    plugin = ModbusProtocol(LinkSettings(timeout=timeout))
    run_mapper(plugin, broker, node, devices, metrics, once=once, push_data=push_data, log_level=log_level)


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
    setup_logging(log_level, node=node)
    configs = _load(plugin, devices, node) if devices else None
    if once:
        if configs is None:
            _fail("--once reads the devices given with --devices")
        raise typer.Exit(asyncio.run(_once(plugin, configs)))
    if node is None:
        _fail("--node is required: the mapper asks the edge node for its devices")
    settings = BrokerSettings(url=broker)
    try:
        asyncio.run(_serve(plugin, settings, node, configs, metrics, push_data=push_data))
    except (EventBusError, ObservabilityError) as exc:
        _fail(str(exc), code=1)


def _fail(message: str, *, code: int = 2) -> NoReturn:
    typer.echo(f"edgetwin mapper: {message}", err=True)
    raise typer.Exit(code)


def _load(plugin: ProtocolPlugin, path: Path, node: str | None) -> list[DeviceConfig]:
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
    registry = new_registry()
    mapper = Mapper(plugin, settings, node=node, devices=configs, registry=registry, push_data=push_data)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)

    def health() -> HealthReport:
        detail = {
            "broker": "connected" if mapper.connected else "disconnected",
            "devices": {
                device: state.value if state else "unknown" for device, state in mapper.devices.items()
            },
            "refused": mapper.refused,
        }
        return HealthReport(healthy=mapper.connected, detail=detail)

    server = ObservabilityServer(metrics, registry=registry, health=health) if metrics else None
    if server is not None:
        await server.start()
        log.info("serving /healthz and /metrics on %s", server.url)
    try:
        await mapper.start()
        await stopping.wait()
    finally:
        await mapper.stop()
        if server is not None:
            await server.stop()
