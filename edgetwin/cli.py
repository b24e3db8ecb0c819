"""The `edgetwin` command: one typer app; each sub-command lives in a module under edgetwin/commands."""

from __future__ import annotations

import typer

from edgetwin import __version__
from edgetwin.commands import image, mapper
from edgetwin.commands.cloudcore import cloudcore
from edgetwin.commands.demo import demo
from edgetwin.commands.edgecore import edgecore
from edgetwin.commands.gettoken import gettoken
from edgetwin.commands.join import join
from edgetwin.commands.validate import validate

app = typer.Typer(
    name="edgetwin",
    help="KubeEdge-compatible edge platform: device twins, mappers and pods on edge gateways.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgetwin {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """KubeEdge-compatible edge platform: device twins, mappers and pods on edge gateways."""


# Sub-commands register here, one line each (keeps this module free of logic).
app.add_typer(mapper.app)
app.add_typer(image.app)
app.command("validate")(validate)
app.command("edgecore")(edgecore)
app.command("cloudcore")(cloudcore)
app.command("demo")(demo)
app.command("gettoken")(gettoken)
app.command("join")(join)


def main() -> None:
    """Entry point of the `edgetwin` console script."""
    app()
