"""Removal of a pod's cgroup directories once its sandbox is gone (runc removes only the containers' own)."""

from __future__ import annotations

import contextlib
from pathlib import Path

__all__ = ["remove_pod_cgroup"]

CGROUP_ROOT = Path("/sys/fs/cgroup")


def remove_pod_cgroup(path: str, root: Path = CGROUP_ROOT) -> None:
    """Remove the (empty) cgroup ``path`` (e.g. ``/edgetwin/pod<uid>``) from every hierarchy.

    Works for cgroup v2 (one tree) and v1 (one tree per controller, plus ``unified`` in hybrid mode); a
    directory still in use or already gone is left alone: this is housekeeping, never a failure.
    """
    relative = path.strip("/")
    if not relative or not root.is_dir():
        return
    candidates = [root / relative]
    for hierarchy in root.iterdir():
        candidates += [hierarchy / relative, hierarchy / "unified" / relative]
    for candidate in candidates:
        with contextlib.suppress(OSError):
            candidate.rmdir()
