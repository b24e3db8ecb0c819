"""Ordering of Kubernetes resourceVersions, as KubeEdge's ``CompareResourceVersion`` does it."""

from __future__ import annotations

__all__ = ["is_newer"]


def is_newer(version: str, than: str | None) -> bool:
    """True when ``version`` should replace ``than`` (the version already known; ``None``: none yet).

    resourceVersions are opaque strings to clients, but every Kubernetes API server (etcd's revisions) hands
    out increasing integers, so two numeric versions compare as numbers; where either is not a number the
    only safe reading is "a different version is a newer one".
    """
    if not than:
        return True
    if _numeric(version) and _numeric(than):
        return int(version) > int(than)
    return version != than


def _numeric(version: str) -> bool:
    return version.isascii() and version.isdigit()
