"""``edgetwin validate FILE...``: check Device / DeviceModel YAML the way edgetwin reads it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from device_models import DocumentReport, validate_paths

__all__ = ["validate"]

EXIT_INVALID = 1


def validate(
    paths: Annotated[
        list[Path],
        typer.Argument(
            metavar="FILE...",
            help="YAML or JSON files, or directories (read recursively).",
            show_default=False,
        ),
    ],
    skip_other_kinds: Annotated[
        bool,
        typer.Option(
            "--skip-other-kinds",
            help="Only warn about documents that are not a Device or DeviceModel (a Deployment, ...).",
        ),
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only the problems and the summary.")
    ] = False,
) -> None:
    """Check Device and DeviceModel files (devices.kubeedge.io v1beta1 or v1alpha2).

    Each object is read as edgetwin reads it (v1alpha2 is converted to v1beta1)
    and its protocol configData is checked (modbus, opcua, ble; others are free-form).
    A Device whose DeviceModel is among the files is also checked against it:
    its properties exist in the model, desired values have the model's type
    and lie within minimum..maximum, ReadOnly properties have no desired value.

    Prints OK per valid object, and ERROR or WARN per problem with the file,
    the object, the field path, the bad value and the reason.
    Exits with 1 if there is any error.

    Example: edgetwin validate examples/ my-devices.yaml
    """
    reports = validate_paths(paths, skip_other_kinds=skip_other_kinds)
    if not reports:
        typer.echo("no Device or DeviceModel found")
        raise typer.Exit(EXIT_INVALID)
    for report in reports:
        _print_report(report, quiet=quiet)
    problems = [problem for report in reports for problem in report.problems]
    errors = sum(problem.is_error for problem in problems)
    valid = sum(report.ok for report in reports)
    invalid = sum(any(problem.is_error for problem in report.problems) for report in reports)
    skipped = len(reports) - valid - invalid
    typer.echo(
        f"{len(reports)} document(s): {valid} valid, {invalid} invalid, {skipped} skipped; "
        f"{errors} error(s), {len(problems) - errors} warning(s)"
    )
    if errors:
        raise typer.Exit(EXIT_INVALID)


def _print_report(report: DocumentReport, *, quiet: bool) -> None:
    if report.ok and not quiet:
        typer.echo(f"OK     {report.source}: {report.label}")
    for problem in report.problems:
        typer.echo(f"{'ERROR' if problem.is_error else 'WARN '}  {problem}")
