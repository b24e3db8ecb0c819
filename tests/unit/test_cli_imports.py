"""The command line stays light: a mapper process must not carry the edge's or the cloud's libraries."""

from __future__ import annotations

import subprocess
import sys

import edgecore.edged
from edgetwin.commands import image


def test_the_image_command_defaults_are_edgeds() -> None:
    assert (image.DEFAULT_ADDRESS, image.CRI_NAMESPACE) == (
        edgecore.edged.DEFAULT_ADDRESS,
        edgecore.edged.CRI_NAMESPACE,
    )


def test_loading_the_cli_loads_no_daemon_or_runtime_library() -> None:
    heavy = ["edgecore", "cloudcore", "cloudsync", "grpc", "aiohttp", "kubernetes", "cryptography"]
    script = f"import sys, edgetwin.cli; print([m for m in {heavy!r} if m in sys.modules])"
    loaded = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    assert loaded.stdout.strip() == "[]"
