"""``edgetwin edgecore``: run the edge daemon, as KubeEdge's ``edgecore --config``.

The daemon's packages (edgecore, devicetwin, aiosqlite, aiohttp) are imported inside the functions: every
``edgetwin`` command imports this module for its signature, and a mapper process must not pay for them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgetwin.logs import LogFormat, LogLevel, setup_logging
from edgetwin.runtime import run

if TYPE_CHECKING:
    from edgecore import EdgeCoreConfig

__all__ = ["edgecore"]

DEFAULT_CONFIG = Path("/etc/kubeedge/config/edgecore.yaml")  # where KubeEdge's edgecore looks
EXIT_CONFIG_ERROR = 2


async def _main(config: EdgeCoreConfig, devices_dir: Path | None) -> None:
    from edgecore import EdgeCore
    from edgetwin.daemon import run_until_signalled
    from edgetwin.observability import new_registry

    registry = new_registry()
    core = EdgeCore(config, devices_dir=devices_dir, registry=registry)
    await run_until_signalled(core, healthz=config.edgetwin.healthz, registry=registry)


def edgecore(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="edgecore.yaml (KubeEdge's format).")
    ] = DEFAULT_CONFIG,
    devices: Annotated[
        Path | None,
        typer.Option(
            "--devices",
            help="Directory of Device and DeviceModel YAML files loaded into the twin at start.",
            file_okay=False,
        ),
    ] = None,
    defaultconfig: Annotated[
        bool, typer.Option("--defaultconfig", help="Print a complete default configuration and exit.")
    ] = False,
    log_level: Annotated[LogLevel, typer.Option("--log-level", help="Lowest level logged.")] = LogLevel.INFO,
    log_format: Annotated[
        LogFormat, typer.Option("--log-format", help="One line per event: text or json.")
    ] = LogFormat.TEXT,
) -> None:
    """Run the edge daemon: EventBus (MQTT), DeviceTwin (SQLite), /healthz and /metrics."""
    from device_models import EdgetwinError
    from edgecore import EdgeCoreConfig, EdgeCoreConfigError, dump_config, load_config

    if defaultconfig:
        typer.echo(dump_config(EdgeCoreConfig()), nl=False)
        return
    setup_logging(log_level, fmt=log_format)
    try:
        loaded = load_config(config)
        setup_logging(log_level, fmt=log_format, node=loaded.node_name or None)
        run(_main(loaded, devices))
    # Not log lines: a multi-line reason (every bad device) reads better as it is.
    except EdgeCoreConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_CONFIG_ERROR) from exc
    except EdgetwinError as exc:
        typer.echo(f"edgecore stopped: {exc}", err=True)
        raise typer.Exit(1) from exc
