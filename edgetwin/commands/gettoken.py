"""``edgetwin gettoken``: print a join token, as KubeEdge's ``keadm gettoken``.

The token is minted here from what cloudcore keeps in the cluster (its CA and token key Secrets), so it
needs the same API access as cloudcore and works whether or not cloudcore is running right now.
"""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from edgetwin.runtime import run

__all__ = ["gettoken", "parse_duration"]

EXIT_FAILED = 1
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(text: str) -> timedelta:
    """A Go-style duration such as ``24h``, ``1h30m`` or ``90s``; raises ``ValueError`` otherwise."""
    parts = _DURATION_PART.findall(text)
    if not text or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"{text!r} is not a duration such as 24h, 1h30m or 90s")
    seconds = sum(float(number) * _UNITS[unit] for number, unit in parts)
    if seconds <= 0:
        raise ValueError(f"{text!r}: a token must live longer than 0s")
    return timedelta(seconds=seconds)


async def _mint(kubeconfig: Path | None, namespace: str, ttl: timedelta) -> str:
    from cloudcore import read_ca, read_token_key
    from cloudcore.kube import load_api_client
    from cloudsync import TokenAuthority

    # Reading the kubeconfig is file I/O: off the loop, as every blocking call of the client.
    api = await asyncio.to_thread(load_api_client, kubeconfig or "")
    with api:
        ca = await read_ca(api, namespace)
        key = await read_token_key(api, namespace)
    return TokenAuthority(key, ca.hash()).issue(ttl)


def gettoken(
    kubeconfig: Annotated[
        Path | None,
        typer.Option(
            "--kubeconfig",
            help="kubeconfig of the cluster (default: $KUBECONFIG, the in-cluster account, ~/.kube/config).",
            dir_okay=False,
        ),
    ] = None,
    namespace: Annotated[
        str, typer.Option("--namespace", "-n", help="Namespace of cloudcore's Secrets.")
    ] = "kubeedge",
    ttl: Annotated[str, typer.Option("--ttl", help="How long the token stays valid, e.g. 24h, 30m.")] = "24h",
) -> None:
    """Print a token for `edgetwin join` (the CA's hash and a signed JWT with an expiry).

    Reads cloudcore's CA and token key from the cluster's Secrets; only the token goes to stdout,
    so `TOKEN=$(edgetwin gettoken)` works.
    """
    from device_models import EdgetwinError

    try:
        lifetime = parse_duration(ttl)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--ttl") from exc
    try:
        token = run(_mint(kubeconfig, namespace, lifetime))
    except EdgetwinError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_FAILED) from exc
    typer.echo(token)
