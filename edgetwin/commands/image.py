"""``edgetwin image import FILE``: load an image archive into the edge's containerd, for nodes without a
registry (an OCI image-layout tar, or the tar ``docker save`` writes)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgetwin.runtime import run

__all__ = ["app"]

EXIT_FAILED = 1
# edgecore.edged's DEFAULT_ADDRESS and CRI_NAMESPACE, written out: importing edgecore here would load the
# whole edge (gRPC, aiohttp, ...) into every edgetwin command, mappers included. A unit test keeps them equal.
DEFAULT_ADDRESS = "unix:///run/containerd/containerd.sock"
CRI_NAMESPACE = "k8s.io"

app = typer.Typer(
    name="image", help="Manage the container images of the edge's runtime.", no_args_is_help=True
)


@app.command("import")
def import_(
    archive: Annotated[
        Path,
        typer.Argument(metavar="FILE", help="Image archive: OCI image layout tar or `docker save` tar."),
    ],
    address: Annotated[
        str, typer.Option("--address", help="containerd socket (a path or unix:// address).")
    ] = DEFAULT_ADDRESS,
    namespace: Annotated[
        str, typer.Option("--namespace", help="containerd namespace; pods use k8s.io (the CRI plugin's).")
    ] = CRI_NAMESPACE,
) -> None:
    """Import the images of FILE into containerd and print their references.

    Pods refer to an imported image by the reference printed, e.g. edgetwin.local/busybox:test.

    Example: edgetwin image import busybox.tar --address /run/containerd/containerd.sock
    """
    from edgecore.edged import ContainerRuntime
    from edgecore.errors import ContainerRuntimeError

    async def main() -> list[str]:
        async with ContainerRuntime(address, namespace=namespace) as runtime:
            return await runtime.import_image(archive)

    try:
        refs = run(main())
    except ContainerRuntimeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_FAILED) from exc
    for ref in refs:
        typer.echo(ref)
