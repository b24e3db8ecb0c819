"""A pod's volumes as host directories: ConfigMaps and Secrets written atomically, emptyDir, hostPath.

ConfigMap and Secret volumes are written the way kubelet's atomic writer does it, so that a running
container sees a whole new version or the old one, never half of each: the files of a version go into a
fresh hidden directory ``..<time>_<random>``, the symlink ``..data`` is swapped to it with a rename, and each
visible name (``key``) is a symlink ``key -> ..data/key``. The container bind-mounts the volume directory,
so the relative links resolve inside it too.

Layout under Edged's root: ``volumes/<pod uid>/<plugin>/<volume name>``, with kubelet's plugin names
(``kubernetes.io~configmap``, ``kubernetes.io~secret``, ``kubernetes.io~empty-dir``). hostPath volumes
are the host's own path. Volume types the edge cannot serve (``projected``, ``downwardAPI``, network
volumes) become an empty read-only directory and a warning: the pod runs without their content.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from edgecore.edged.models import Mount
from edgecore.errors import PodConfigError, PodSpecError

__all__ = [
    "ObjectSource",
    "VolumeSet",
    "decode_secret",
    "pod_volume_root",
    "prepare_volumes",
    "remove_pod_volumes",
    "write_atomic",
]

logger = logging.getLogger(__name__)

DATA_LINK = "..data"
CONFIGMAP_MODE = 0o644
SECRET_MODE = 0o600
"""Secret files are readable by their owner only (kubelet's default is 0644; the edge is stricter)."""

_PLUGINS = {
    "configMap": "kubernetes.io~configmap",
    "secret": "kubernetes.io~secret",
    "emptyDir": "kubernetes.io~empty-dir",
}


class ObjectSource(Protocol):
    """Where ConfigMaps and Secrets are read (the MetaManager)."""

    def get(self, resource_type: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored object, or None."""
        ...


@dataclass(frozen=True)
class VolumeSet:
    """The host directory of each of a pod's volumes (by volume name) and whether it is read-only."""

    paths: Mapping[str, str]
    read_only: frozenset[str]

    def mounts(self, container: Mapping[str, Any]) -> list[Mount]:
        """The container's ``volumeMounts`` as runtime mounts; raises :class:`PodSpecError` for an unknown
        volume or a bad ``subPath``."""
        mounts = []
        for index, mount in enumerate(container.get("volumeMounts") or []):
            field = f"spec.containers[name={container.get('name')}].volumeMounts[{index}]"
            name = mount.get("name")
            if name not in self.paths:
                raise PodSpecError(f"{field}.name", name, "no volume of the pod has this name")
            host = self.paths[name]
            if sub_path := mount.get("subPath"):
                host = str(Path(host) / _relative(sub_path, f"{field}.subPath"))
            mounts.append(
                Mount(
                    container_path=str(mount.get("mountPath", "")),
                    host_path=host,
                    read_only=bool(mount.get("readOnly")) or name in self.read_only,
                )
            )
        return mounts


def pod_volume_root(root: Path, uid: str) -> Path:
    """The directory holding every volume of the pod with ``uid``."""
    return root / "volumes" / uid


def remove_pod_volumes(root: Path, uid: str) -> None:
    """Remove the pod's volume directories (blocking; hostPath volumes are never touched)."""
    shutil.rmtree(pod_volume_root(root, uid), ignore_errors=True)


def decode_secret(secret: Mapping[str, Any], key: str) -> bytes | None:
    """The value of ``key`` in a Secret (``data`` is base64, ``stringData`` plain), or None."""
    data = secret.get("data") or {}
    if key in data:
        try:
            return base64.b64decode(str(data[key]), validate=True)
        except (binascii.Error, ValueError):
            return None
    string_data = secret.get("stringData") or {}
    return str(string_data[key]).encode() if key in string_data else None


def _relative(path: str, field: str) -> PurePosixPath:
    relative = PurePosixPath(path)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise PodSpecError(field, path, "must be a relative path without '..'")
    return relative


def _object_files(
    kind: str, obj: Mapping[str, Any], source: Mapping[str, Any], field: str, pod: str
) -> dict[str, tuple[bytes, int]]:
    """The files (relative path -> content, mode) a ConfigMap or Secret volume shows."""
    default = source.get("defaultMode", SECRET_MODE if kind == "secret" else CONFIGMAP_MODE)
    values: dict[str, bytes] = {}
    if kind == "secret":
        for key in {*(obj.get("data") or {}), *(obj.get("stringData") or {})}:
            value = decode_secret(obj, key)
            if value is not None:
                values[key] = value
    else:
        values = {key: str(value).encode() for key, value in (obj.get("data") or {}).items()}
        for key, value in (obj.get("binaryData") or {}).items():
            with contextlib.suppress(binascii.Error, ValueError):
                values[key] = base64.b64decode(str(value), validate=True)
    items = source.get("items")
    if not items:
        return {key: (value, int(default)) for key, value in values.items()}
    files = {}
    for index, item in enumerate(items):
        key = item.get("key")
        if key not in values:
            if source.get("optional"):
                continue
            raise PodConfigError(pod, f"{field}.items[{index}].key", f"{kind} has no key {key!r}")
        path = _relative(str(item.get("path", key)), f"{field}.items[{index}].path")
        files[str(path)] = (values[key], int(item.get("mode", default)))
    return files


def _current_payload(directory: Path) -> dict[str, tuple[bytes, int]] | None:
    data = directory / DATA_LINK
    if not data.is_dir():
        return None
    payload = {}
    for path in data.rglob("*"):
        if path.is_file():
            payload[str(path.relative_to(data))] = (path.read_bytes(), path.stat().st_mode & 0o777)
    return payload


def write_atomic(directory: Path, files: Mapping[str, tuple[bytes, int]]) -> bool:
    """Make ``directory`` show exactly ``files`` (relative path -> content, mode), swapping all at once.

    Blocking. Returns False when it already did (nothing written), True after a swap.
    """
    wanted = dict(files)
    if _current_payload(directory) == wanted:
        return False
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime())
    version = Path(tempfile.mkdtemp(prefix=f"..{stamp}.", dir=directory))
    version.chmod(0o755)
    for relative, (content, mode) in wanted.items():
        target = version / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        target.chmod(mode)
    previous = (directory / DATA_LINK).readlink() if (directory / DATA_LINK).is_symlink() else None
    staging = directory / f"{DATA_LINK}_tmp"
    staging.unlink(missing_ok=True)
    staging.symlink_to(version.name)
    os.replace(staging, directory / DATA_LINK)  # the swap: readers see the old or the new version
    visible = {PurePosixPath(relative).parts[0] for relative in wanted}
    for entry in directory.iterdir():
        if entry.name.startswith(".."):
            continue
        if entry.name not in visible and entry.is_symlink():
            entry.unlink()
    for name in visible:
        link = directory / name
        if not link.is_symlink():
            link.symlink_to(f"{DATA_LINK}/{name}")
    if previous is not None and previous.name != version.name:
        shutil.rmtree(directory / previous, ignore_errors=True)
    return True


def prepare_volumes(pod: Mapping[str, Any], root: Path, objects: ObjectSource) -> VolumeSet:
    """Create or refresh every volume of ``pod`` under ``root`` (blocking: run it in a thread).

    ConfigMap / Secret content comes from ``objects``; a missing one raises :class:`PodConfigError`
    (unless the volume is ``optional``). Refreshing a volume whose object changed swaps the new content
    in; an unchanged one is left alone.
    """
    metadata = pod.get("metadata") or {}
    namespace, uid = str(metadata.get("namespace", "")), str(metadata.get("uid", ""))
    pod_name = f"{namespace}/{metadata.get('name')}"
    base = pod_volume_root(root, uid)
    paths: dict[str, str] = {}
    read_only: set[str] = set()
    for index, volume in enumerate((pod.get("spec") or {}).get("volumes") or []):
        name = volume.get("name")
        field = f"spec.volumes[{index}]"
        if not isinstance(name, str) or not name:
            raise PodSpecError(f"{field}.name", name, "a volume needs a name")
        if "hostPath" in volume:
            paths[name] = _host_path(volume["hostPath"], f"{field}.hostPath")
            continue
        kind = next((key for key in ("configMap", "secret", "emptyDir") if key in volume), None)
        directory = base / _PLUGINS.get(kind or "", "unsupported") / name
        if kind == "emptyDir":
            directory.mkdir(parents=True, exist_ok=True)
        elif kind is None:
            logger.warning(
                "volume type not supported at the edge; mounted empty",
                extra={"pod": pod_name, "volume": name, "types": sorted(set(volume) - {"name"})},
            )
            directory.mkdir(parents=True, exist_ok=True)
            read_only.add(name)
        else:
            source = volume[kind]
            resource_type = kind.lower()
            object_name = source.get("name" if kind == "configMap" else "secretName")
            obj = objects.get(resource_type, namespace, str(object_name))
            if obj is None and not source.get("optional"):
                raise PodConfigError(
                    pod_name, f"{field}.{kind}", f"{resource_type} {object_name!r} not found"
                )
            files = (
                {} if obj is None else _object_files(resource_type, obj, source, f"{field}.{kind}", pod_name)
            )
            if write_atomic(directory, files):
                logger.info("volume content written", extra={"pod": pod_name, "volume": name})
            read_only.add(name)
        paths[name] = str(directory)
    return VolumeSet(paths, frozenset(read_only))


def _host_path(source: Mapping[str, Any], field: str) -> str:
    path = source.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise PodSpecError(f"{field}.path", path, "must be an absolute path")
    kind = source.get("type") or ""
    host = Path(path)
    if kind == "DirectoryOrCreate":
        host.mkdir(parents=True, exist_ok=True)
    elif kind == "FileOrCreate" and not host.exists():
        host.parent.mkdir(parents=True, exist_ok=True)
        host.touch()
    elif kind in {"Directory", "File", "Socket"} and not host.exists():
        raise PodSpecError(f"{field}.path", path, f"does not exist (type {kind})")
    return path
