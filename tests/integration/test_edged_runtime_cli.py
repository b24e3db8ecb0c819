"""``edgetwin image import FILE`` as a user runs it on an edge without a registry: a separate process."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from edgecore.edged import ContainerRuntime
from edgetwin.testing.containerd import BUSYBOX_IMAGE, PAUSE_IMAGE, Containerd

EDGETWIN = str(Path(sys.executable).with_name("edgetwin"))


async def edgetwin(*args: str) -> tuple[int, str, str]:
    """Run the ``edgetwin`` console script; return its exit code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        EDGETWIN, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_image_import_prints_the_references_pods_can_use(
    cri_runtime: ContainerRuntime, containerd: Containerd, busybox_archive: Path
) -> None:
    await cri_runtime.remove_image(BUSYBOX_IMAGE)

    code, out, err = await edgetwin(
        "image", "import", str(busybox_archive), "--address", str(containerd.socket)
    )

    assert (code, err) == (0, "")
    assert sorted(out.split()) == [BUSYBOX_IMAGE, PAUSE_IMAGE]
    assert await cri_runtime.has_image(BUSYBOX_IMAGE)


async def test_image_import_of_a_missing_file_says_so(containerd: Containerd, tmp_path: Path) -> None:
    missing = tmp_path / "nope.tar"

    code, out, err = await edgetwin("image", "import", str(missing), "--address", containerd.endpoint)

    assert (code, out) == (1, "")
    assert err.strip() == f"error: cannot import image archive {missing}: no such file"


async def test_image_import_without_containerd_names_the_address(
    busybox_archive: Path, tmp_path: Path
) -> None:
    socket = tmp_path / "no-containerd.sock"

    code, _, err = await edgetwin("image", "import", str(busybox_archive), "--address", str(socket))

    assert code == 1
    assert f"error: cannot import image archive {busybox_archive}:" in err
    assert str(socket) in err
