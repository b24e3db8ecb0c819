"""``edgetwin cloudcore``: run the cloud daemon against a cluster, as KubeEdge's ``cloudcore --config``.

The daemon's packages (cloudcore, cloudsync, the kubernetes client) are imported inside the functions: every
``edgetwin`` command imports this module for its signature.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgetwin.logs import LogFormat, LogLevel, setup_logging
from edgetwin.runtime import run

if TYPE_CHECKING:
    from cloudcore import CloudCoreConfig

__all__ = ["cloudcore"]

DEFAULT_CONFIG = Path("/etc/kubeedge/config/cloudcore.yaml")  # where KubeEdge's cloudcore looks
EXIT_CONFIG_ERROR = 2


async def _main(config: CloudCoreConfig) -> None:
    from cloudcore import CloudCore, load_api_client
    from edgetwin.daemon import run_until_signalled
    from edgetwin.observability import new_registry

    api = await asyncio.to_thread(
        load_api_client, config.kube_api_config.kube_config, master=config.kube_api_config.master
    )
    try:
        registry = new_registry()
        core = CloudCore(config, api, registry=registry)
        await run_until_signalled(core, healthz=config.edgetwin.healthz, registry=registry)
    finally:
        await asyncio.to_thread(api.close)


def cloudcore(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="cloudcore.yaml (KubeEdge's format).")
    ] = DEFAULT_CONFIG,
    kubeconfig: Annotated[
        Path | None,
        typer.Option(
            "--kubeconfig",
            help="kubeconfig of the cluster (overrides kubeAPIConfig.kubeConfig).",
            dir_okay=False,
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
    """Run the cloud daemon: certificates (10002), the edge link (10000), node and device controllers."""
    from cloudcore import CloudCoreConfig, CloudCoreConfigError, dump_config, load_config
    from device_models import EdgetwinError

    if defaultconfig:
        typer.echo(dump_config(CloudCoreConfig()), nl=False)
        return
    setup_logging(log_level, fmt=log_format)
    try:
        loaded = load_config(config)
        if kubeconfig is not None:
            loaded.kube_api_config.kube_config = str(kubeconfig)
        run(_main(loaded))
    except CloudCoreConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_CONFIG_ERROR) from exc
    except EdgetwinError as exc:
        typer.echo(f"cloudcore stopped: {exc}", err=True)
        raise typer.Exit(1) from exc
