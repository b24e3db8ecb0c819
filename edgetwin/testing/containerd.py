"""A private containerd (with runc and its CRI plugin) for tests, and the tiny busybox image they run.

No registry is reachable on the machines edgetwin is built on, so the image is built here: one layer holding
Debian's statically linked ``/bin/busybox`` and a symlink per applet, written as an OCI image-layout archive
(the format ``ctr images import`` and ``edgetwin image import`` read). The same layer also serves as the
pod sandbox ("pause") image, with ``sleep infinity`` as its command.

:class:`Containerd` runs containerd on its own root, state, socket, runc root and CNI directories, so it
neither sees nor disturbs a containerd of the machine. Containers get their cgroups under ``cgroup_parent``;
:meth:`Containerd.stop` kills whatever still runs there, the shims, and unmounts what containerd left mounted,
even after a test that failed half-way.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from device_models import EdgetwinError
from edgecore.edged.cri import runtime_v1_pb2 as cri
from edgetwin.testing.waiting import wait_for_sync

__all__ = [
    "BUSYBOX_IMAGE",
    "PAUSE_IMAGE",
    "Containerd",
    "ContainerdStartError",
    "build_busybox_archive",
    "containerd_missing",
]

BUSYBOX_IMAGE = "edgetwin.local/busybox:test"
"""The reference of the busybox image in the archive built by :func:`build_busybox_archive`."""

PAUSE_IMAGE = "edgetwin.local/pause:test"
"""The sandbox image of the same archive (busybox running ``sleep infinity``)."""

_BUSYBOX = Path("/bin/busybox")
_CGROUP_ROOT = Path("/sys/fs/cgroup")
_LAYER_DIRS = ("bin", "dev", "etc", "proc", "root", "sys", "tmp", "var")
_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
_OCI_INDEX = "application/vnd.oci.image.index.v1+json"


class ContainerdStartError(EdgetwinError):
    """The private containerd did not start or did not serve CRI in time; ``log`` is its output's tail."""

    def __init__(self, reason: str, log: str) -> None:
        super().__init__(f"containerd did not start: {reason}\n{log}")
        self.reason = reason
        self.log = log


def containerd_missing() -> str | None:
    """Why containerd-based tests cannot run here (a missing binary), or ``None`` when they can."""
    for binary in ("containerd", "containerd-shim-runc-v2", "runc", "ctr"):
        if shutil.which(binary) is None:
            return f"{binary} is not installed (Debian packages containerd and runc)"
    if not _BUSYBOX.exists():
        return f"{_BUSYBOX} is missing (Debian package busybox-static)"
    if os.geteuid() != 0:
        return "containerd needs root"
    return None


def _goarch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(machine, machine)


def _busybox_layer(busybox: Path) -> bytes:
    """A deterministic tar (fixed owners and times) of busybox, its applet links and the usual top dirs."""
    applets = subprocess.run([str(busybox), "--list"], check=True, capture_output=True, text=True).stdout
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in _LAYER_DIRS:
            entry = tarfile.TarInfo(name)
            entry.type = tarfile.DIRTYPE
            entry.mode = 0o1777 if name == "tmp" else 0o755
            tar.addfile(entry)
        data = busybox.read_bytes()
        entry = tarfile.TarInfo("bin/busybox")
        entry.size = len(data)
        entry.mode = 0o755
        tar.addfile(entry, io.BytesIO(data))
        for applet in sorted(set(applets.split()) - {"busybox"}):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
    return buffer.getvalue()


@dataclass(frozen=True)
class _Blob:
    data: bytes
    media_type: str

    @property
    def digest(self) -> str:
        return f"sha256:{hashlib.sha256(self.data).hexdigest()}"

    def descriptor(self, **extra: object) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data), **extra}


def _json_blob(document: dict[str, object], media_type: str) -> _Blob:
    return _Blob(json.dumps(document, sort_keys=True, separators=(",", ":")).encode(), media_type)


def build_busybox_archive(
    destination: Path,
    *,
    busybox: Path = _BUSYBOX,
    image: str = BUSYBOX_IMAGE,
    pause_image: str = PAUSE_IMAGE,
) -> Path:
    """Write an OCI image-layout tar holding ``image`` (``sh``) and ``pause_image`` (``sleep infinity``).

    Both share one gzip layer built from ``busybox``; each manifest is named in the index by the
    ``io.containerd.image.name`` annotation, which is how containerd's importer names what it imports.
    Returns ``destination``.
    """
    layer_tar = _busybox_layer(busybox)
    layer = _Blob(gzip.compress(layer_tar, mtime=0), _OCI_LAYER)
    diff_id = f"sha256:{hashlib.sha256(layer_tar).hexdigest()}"
    blobs: list[_Blob] = [layer]
    manifests: list[dict[str, object]] = []
    for name, config in (
        (image, {"Cmd": ["sh"], "Env": ["PATH=/bin"]}),
        (pause_image, {"Entrypoint": ["/bin/sleep", "infinity"], "Env": ["PATH=/bin"]}),
    ):
        config_blob = _json_blob(
            {
                "architecture": _goarch(),
                "os": "linux",
                "config": config,
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            },
            _OCI_CONFIG,
        )
        manifest = _json_blob(
            {
                "schemaVersion": 2,
                "mediaType": _OCI_MANIFEST,
                "config": config_blob.descriptor(),
                "layers": [layer.descriptor()],
            },
            _OCI_MANIFEST,
        )
        blobs += [config_blob, manifest]
        manifests.append(
            manifest.descriptor(
                platform={"architecture": _goarch(), "os": "linux"},
                annotations={
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": name.rpartition(":")[2],
                },
            )
        )
    index = {"schemaVersion": 2, "mediaType": _OCI_INDEX, "manifests": manifests}
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(destination, "w") as tar:
        files = [("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())]
        files += [("index.json", json.dumps(index).encode())]
        files += [(f"blobs/sha256/{blob.digest.removeprefix('sha256:')}", blob.data) for blob in blobs]
        for name, data in dict(files).items():
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            entry.mode = 0o644
            tar.addfile(entry, io.BytesIO(data))
    return destination


class Containerd:
    """containerd with its CRI plugin on private directories under ``workdir``; sync ``start()`` / ``stop()``.

    ``endpoint`` is the CRI address to give :class:`edgecore.edged.ContainerRuntime`; pods must use
    ``cgroup_parent`` (a fresh one per instance) so that :meth:`stop` finds everything they started.
    """

    def __init__(self, workdir: Path, *, sandbox_image: str = PAUSE_IMAGE) -> None:
        self.workdir = workdir
        self.sandbox_image = sandbox_image
        self.cgroup_parent = f"/edgetwin-test-{uuid.uuid4().hex[:8]}"
        self.socket = workdir / "containerd.sock"
        self.log_file = workdir / "containerd.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """The gRPC address of the socket (``unix:///...``)."""
        return f"unix://{self.socket}"

    def config(self) -> str:
        """containerd's TOML configuration: private directories, no CNI config, the local pause image."""
        root, state = self.workdir / "root", self.workdir / "state"
        cri_plugin = '[plugins."io.containerd.grpc.v1.cri"]'
        return "\n".join(
            [
                "version = 2",
                f'root = "{root}"',
                f'state = "{state}"',
                # Snapshotters this machine cannot have; disabling them keeps the log readable.
                'disabled_plugins = ["io.containerd.snapshotter.v1.btrfs",'
                ' "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",'
                ' "io.containerd.snapshotter.v1.aufs"]',
                "[grpc]",
                f'  address = "{self.socket}"',
                "[ttrpc]",
                f'  address = "{self.socket}.ttrpc"',
                '[plugins."io.containerd.internal.v1.opt"]',
                f'  path = "{self.workdir / "opt"}"',
                cri_plugin,
                f'  sandbox_image = "{self.sandbox_image}"',
                "  disable_apparmor = true",
                # Sandboxes ask for oom_score_adj -998, which unprivileged VMs and containers refuse.
                "  restrict_oom_score_adj = true",
                f"{cri_plugin[:-1]}.cni]",
                '  bin_dir = "/usr/lib/cni"',
                f'  conf_dir = "{self.workdir / "cni"}"',
                f"{cri_plugin[:-1]}.containerd.runtimes.runc]",
                '  runtime_type = "io.containerd.runc.v2"',
                f"{cri_plugin[:-1]}.containerd.runtimes.runc.options]",
                f'  Root = "{self.workdir / "runc"}"',
                "",
            ]
        )

    def start(self, timeout: float = 30.0) -> None:
        """Start containerd and wait until its CRI plugin answers ``Version``."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "cni").mkdir(exist_ok=True)
        config = self.workdir / "config.toml"
        config.write_text(self.config())
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                ["containerd", "--config", str(config), "--log-level", "info"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for_sync(self._serving, timeout, interval=0.1, what="containerd's CRI plugin")
        except Exception as exc:
            self.stop()
            raise ContainerdStartError(str(exc), self.log_tail()) from exc

    def _serving(self) -> bool:
        if self._process is None or self._process.poll() is not None:
            raise ContainerdStartError("containerd exited", self.log_tail())
        if not self.socket.exists():
            return False
        with grpc.insecure_channel(self.endpoint) as channel:
            version = channel.unary_unary(
                "/runtime.v1.RuntimeService/Version",
                request_serializer=cri.VersionRequest.SerializeToString,
                response_deserializer=cri.VersionResponse.FromString,
            )
            # Raises until the CRI service has finished initialising.
            version(cri.VersionRequest(version="v1"), timeout=2.0)
        return True

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of containerd's output."""
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self, grace: float = 10.0) -> None:
        """Stop containerd; then kill what its containers and shims left running and unmount their files."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for pid in self._cgroup_pids():
            _kill(pid)
        for pid in self._shim_pids():
            _kill(pid)
        self._unmount_all()
        self._remove_cgroups()

    def _cgroup_dirs(self) -> Iterator[Path]:
        relative = self.cgroup_parent.lstrip("/")
        for hierarchy in _CGROUP_ROOT.iterdir():
            candidates = [hierarchy / relative, hierarchy / "unified" / relative]
            yield from (path for path in candidates if path.is_dir())

    def _cgroup_pids(self) -> set[int]:
        pids: set[int] = set()
        for top in self._cgroup_dirs():
            for procs in top.rglob("cgroup.procs"):
                with contextlib.suppress(OSError, ValueError):
                    pids.update(int(line) for line in procs.read_text().split())
        return pids

    def _shim_pids(self) -> list[int]:
        mine = str(self.socket).encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    cmdline = (entry / "cmdline").read_bytes().split(b"\0")
                    if cmdline and cmdline[0].endswith(b"containerd-shim-runc-v2") and mine in cmdline:
                        pids.append(int(entry.name))
        return pids

    def _unmount_all(self) -> None:
        prefix = f"{self.workdir}/"
        mounts = [
            line.split()[4]
            for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(prefix)
        ]
        for mountpoint in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mountpoint], check=False, capture_output=True)

    def _remove_cgroups(self) -> None:
        for top in list(self._cgroup_dirs()):
            for directory in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    directory.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
