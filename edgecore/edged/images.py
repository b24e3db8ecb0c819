"""Import of image archives (OCI image layout or ``docker save`` tars) into containerd, for offline edges.

CRI has no import call, so this runs ``ctr images import``, the client that ships in the same Debian package
as the containerd it talks to (and so always speaks its version of the API). The alternatives are more
fragile: containerd 1.6 (Debian 12) has no Transfer service, and importing through the Content and Images
gRPC services would mean re-implementing the archive reader, the layer unpacking into the snapshotter and
the garbage-collection leases that ``ctr`` already gets right. Images are imported into the ``k8s.io``
namespace, the one containerd's CRI plugin serves, and unpacked for the node's platform.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
import subprocess
from pathlib import Path

from edgecore.errors import ImageImportError

__all__ = ["CRI_NAMESPACE", "import_archive", "socket_path"]

CRI_NAMESPACE = "k8s.io"
"""The containerd namespace of the CRI plugin: images must be there for pods to use them."""

logger = logging.getLogger(__name__)

# ctr prints one line per image it unpacks: "unpacking <ref> (sha256:<digest>)...done".
_UNPACKED = re.compile(r"^unpacking (\S+) \((sha256:[0-9a-f]{64})\)\.\.\.done", re.MULTILINE)


def socket_path(address: str) -> str:
    """The filesystem path of a containerd address (``unix:///run/containerd/containerd.sock`` or a path)."""
    return address.removeprefix("unix://")


async def import_archive(
    archive: Path,
    *,
    address: str,
    namespace: str = CRI_NAMESPACE,
    ctr: str = "ctr",
    timeout: float = 600.0,
) -> list[str]:
    """Import ``archive`` into containerd at ``address``; return the image references it named.

    Raises :class:`ImageImportError` when the file is missing, ``ctr`` is not installed, the import fails
    (ctr's message is the reason) or takes longer than ``timeout`` seconds.
    """
    if not await asyncio.to_thread(archive.is_file):
        raise ImageImportError(archive, "no such file")
    binary = shutil.which(ctr)
    if binary is None:
        raise ImageImportError(archive, f"{ctr!r} not found (it comes with Debian's containerd package)")
    argv = [binary, "--address", socket_path(address), "--namespace", namespace, "images", "import"]
    process = await asyncio.create_subprocess_exec(
        *argv, str(archive), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError as exc:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise ImageImportError(archive, f"ctr did not finish within {timeout:.0f}s") from exc
    output, errors = stdout.decode(errors="replace"), stderr.decode(errors="replace").strip()
    if process.returncode != 0:
        reason = errors.splitlines()[-1] if errors else f"ctr exited with {process.returncode}"
        raise ImageImportError(archive, reason.removeprefix("ctr: "))
    refs = [match.group(1) for match in _UNPACKED.finditer(output)]
    if not refs:
        raise ImageImportError(archive, "the archive names no image (no index annotation or RepoTags)")
    logger.info("image archive imported", extra={"archive": str(archive), "images": refs})
    return refs
