"""``edgetwin demo``: the platform end to end with simulated devices, printing each step."""

from __future__ import annotations

import asyncio
import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from edgetwin.logs import LogLevel, setup_logging

__all__ = ["demo"]


class KubeChoice(StrEnum):
    """Which Kubernetes API the demo starts."""

    EMULATOR = "emulator"
    REAL = "real"
    AUTO = "auto"


def demo(
    kube: Annotated[
        KubeChoice,
        typer.Option(
            "--kube",
            help="Kubernetes API: emulator (embedded, the default), real (kube-apiserver + etcd), auto.",
        ),
    ] = KubeChoice.EMULATOR,
    workdir: Annotated[
        Path | None,
        typer.Option("--workdir", help="Keep the demo's files (SQLite, configs, kubeconfig) here."),
    ] = None,
    log_level: Annotated[LogLevel, typer.Option("--log-level", help="Log level of the components.")] = (
        LogLevel.WARNING
    ),
) -> None:
    """Run a Kubernetes API, cloudcore, a joined edge and the Modbus, OPC-UA and BLE mappers on simulated
    devices; `kubectl patch device` drives them."""
    # The demo pulls in the kubernetes client, edgecore and rich: imported only when it runs.
    from rich.console import Console

    from edgetwin.demo import DemoError, run_demo

    setup_logging(log_level)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # the simulated device's own chatter
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    # bleak looks for bluetoothctl (absent: BlueZ is emulated) and says so when the emulated bus stops;
    # the demo's short-lived API clients overflow urllib3's pool at shutdown. Noise here, not news.
    logging.getLogger("bleak").setLevel(logging.ERROR)
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    console = Console()
    try:
        asyncio.run(run_demo(console, kube=kube.value, workdir=workdir))
    except DemoError as exc:
        console.print(f"[bold red]demo failed:[/] {exc}")
        raise typer.Exit(1) from exc
