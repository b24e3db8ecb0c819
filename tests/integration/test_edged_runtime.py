"""Edged's CRI client against a real containerd + runc, running a busybox image built from Debian's."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from edgecore.edged import (
    POD_UID_LABEL,
    ContainerRuntime,
    ContainerState,
    Mount,
    SandboxState,
    pod_log_dir,
)
from edgecore.errors import ImageImportError, RuntimeNotFoundError, RuntimeUnavailableError
from edgetwin.testing import wait_for
from edgetwin.testing.containerd import BUSYBOX_IMAGE, PAUSE_IMAGE, Containerd


def make_pod(*containers: dict[str, Any], name: str = "web") -> dict[str, Any]:
    """A v1 Pod as the API serves it, with a fresh uid."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": str(uuid.uuid4()), "labels": {"app": name}},
        "spec": {"hostNetwork": True, "containers": list(containers)},
    }


def busybox(name: str, script: str, **extra: Any) -> dict[str, Any]:
    """A busybox container running ``sh -c script``."""
    return {"name": name, "image": BUSYBOX_IMAGE, "command": ["sh", "-c", script], **extra}


async def start_pod(
    runtime: ContainerRuntime, pod: dict[str, Any], logs: Path, **options: Any
) -> tuple[str, str]:
    """Run the pod's sandbox and its first container; return (sandbox id, container id)."""
    sandbox = await runtime.run_pod_sandbox(pod, host_network=True, log_dir=pod_log_dir(logs, pod))
    container = await runtime.create_container(sandbox, pod, pod["spec"]["containers"][0], **options)
    await runtime.start_container(container)
    return sandbox, container


async def test_import_archive_makes_the_images_usable(
    cri_runtime: ContainerRuntime, busybox_archive: Path
) -> None:
    await cri_runtime.remove_image(BUSYBOX_IMAGE)
    assert BUSYBOX_IMAGE not in await cri_runtime.list_images()

    refs = await cri_runtime.import_image(busybox_archive)

    assert sorted(refs) == [BUSYBOX_IMAGE, PAUSE_IMAGE]
    assert {BUSYBOX_IMAGE, PAUSE_IMAGE} <= set(await cri_runtime.list_images())
    assert await cri_runtime.has_image(BUSYBOX_IMAGE)


async def test_pod_runs_logs_lists_execs_and_goes_away(cri_runtime: ContainerRuntime, tmp_path: Path) -> None:
    pod = make_pod(busybox("main", "echo hello; sleep 1000"))
    sandbox, container = await start_pod(cri_runtime, pod, tmp_path)

    log_file = pod_log_dir(tmp_path, pod) / "main" / "0.log"
    await wait_for(lambda: "hello" in log_file.read_text(), what="hello logged")
    assert " stdout F hello\n" in log_file.read_text()  # CRI log format: time, stream, tag, message

    [info] = await cri_runtime.list_containers(sandbox)
    assert (info.id, info.name, info.state) == (container, "main", ContainerState.RUNNING)
    assert (info.pod_name, info.pod_namespace, info.pod_uid) == ("web", "default", pod["metadata"]["uid"])
    assert info.started_at is not None
    assert info.exit_code is None
    assert info.log_path == str(log_file)
    [sandbox_info] = await cri_runtime.list_pod_sandboxes({POD_UID_LABEL: pod["metadata"]["uid"]})
    assert (sandbox_info.id, sandbox_info.state, sandbox_info.host_network) == (
        sandbox,
        SandboxState.READY,
        True,
    )
    assert sandbox_info.labels["app"] == "web"

    probe = await cri_runtime.exec_sync(container, ["sh", "-c", "echo ready; test -d /proc/1"], timeout=5)
    assert probe.ok
    assert probe.stdout == b"ready\n"
    failing = await cri_runtime.exec_sync(container, ["sh", "-c", "echo nope >&2; exit 4"], timeout=5)
    assert (failing.ok, failing.exit_code, failing.stderr) == (False, 4, b"nope\n")

    await cri_runtime.stop_container(container, timeout=1)
    stopped = await cri_runtime.container_status(container)
    assert stopped.state == ContainerState.EXITED
    assert stopped.exit_code == 137  # sh ignores SIGTERM as PID 1: killed after the grace period
    await cri_runtime.remove_container(container)
    await cri_runtime.stop_pod_sandbox(sandbox)
    await cri_runtime.remove_pod_sandbox(sandbox)

    assert await cri_runtime.list_containers() == []
    assert await cri_runtime.list_pod_sandboxes() == []
    with pytest.raises(RuntimeNotFoundError):
        await cri_runtime.container_status(container)


async def test_exited_container_reports_its_exit_code(cri_runtime: ContainerRuntime, tmp_path: Path) -> None:
    pod = make_pod(busybox("job", "echo done; exit 3"))
    _, container = await start_pod(cri_runtime, pod, tmp_path)

    async def exited() -> Any:
        info = await cri_runtime.container_status(container)
        return info if info.state == ContainerState.EXITED else None

    info = await wait_for(exited, what="container exited")
    assert info.exit_code == 3
    assert info.reason == "Error"
    # containerd stamps started_at when StartContainer returns, which a quick process may outlive.
    assert info.finished_at is not None
    assert info.started_at is not None


async def test_new_client_adopts_running_pods_by_their_labels(
    cri_runtime: ContainerRuntime, containerd: Containerd, tmp_path: Path
) -> None:
    pod = make_pod(busybox("main", "sleep 1000"), busybox("sidecar", "echo side; sleep 1000"))
    uid = pod["metadata"]["uid"]
    sandbox, container = await start_pod(cri_runtime, pod, tmp_path)

    # An edgecore restarted after kill -9: a new client, nothing in memory.
    async with ContainerRuntime(containerd.endpoint, cgroup_parent=containerd.cgroup_parent) as fresh:
        [found] = await fresh.list_pod_sandboxes({POD_UID_LABEL: uid})
        assert (found.id, found.pod_name, found.state) == (sandbox, "web", SandboxState.READY)
        [running] = await fresh.list_containers(found.id)
        assert (running.id, running.name, running.state) == (container, "main", ContainerState.RUNNING)
        assert running.restart_count == 0

        sidecar = await fresh.create_container(found.id, pod, pod["spec"]["containers"][1], restart_count=2)
        await fresh.start_container(sidecar)
        by_name = {info.name: info for info in await fresh.list_containers(found.id)}

    assert by_name["sidecar"].restart_count == 2
    assert by_name["sidecar"].state == ContainerState.RUNNING
    log_file = pod_log_dir(tmp_path, pod) / "sidecar" / "2.log"
    await wait_for(lambda: "side" in log_file.read_text(), what="the adopted pod's new container logs")
    assert await cri_runtime.list_pod_sandboxes({POD_UID_LABEL: str(uuid.uuid4())}) == []


async def test_limits_reach_the_container_cgroup_which_goes_with_the_pod(
    cri_runtime: ContainerRuntime, tmp_path: Path
) -> None:
    pod = make_pod(busybox("main", "sleep 1000", resources={"limits": {"memory": "48Mi", "cpu": "250m"}}))
    sandbox, container = await start_pod(cri_runtime, pod, tmp_path)

    pid = await cri_runtime.container_pid(container)
    assert pid is not None
    assert cgroup_value(pid, "memory", "memory.limit_in_bytes", "memory.max") == str(48 * 2**20)
    assert cgroup_value(pid, "cpu", "cpu.cfs_quota_us", "cpu.max").split()[0] == "25000"  # of 100000 us

    pod_cgroup = cgroup_dir(pid, "memory").parent
    assert pod_cgroup.name == f"pod{pod['metadata']['uid']}"
    await cri_runtime.stop_pod_sandbox(sandbox)
    await cri_runtime.remove_pod_sandbox(sandbox)
    assert not await asyncio.to_thread(pod_cgroup.exists)


CGROUPS = Path("/sys/fs/cgroup")


def cgroup_dir(pid: int, controller: str) -> Path:
    """The cgroup ``pid`` is in: in the controller's own tree (cgroup v1) or the unified one (v2)."""
    paths = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        for name in names.split(","):
            paths[name] = path
    if controller in paths:
        return CGROUPS / controller / paths[controller].lstrip("/")
    return CGROUPS / paths[""].lstrip("/")


def cgroup_value(pid: int, controller: str, v1_file: str, v2_file: str) -> str:
    """A control file of the cgroup ``pid`` is in (v1 or v2 name)."""
    directory = cgroup_dir(pid, controller)
    return (directory / (v1_file if controller in directory.parts else v2_file)).read_text().strip()


async def test_env_and_host_mounts(cri_runtime: ContainerRuntime, tmp_path: Path) -> None:
    config_dir = tmp_path / "configmap"
    config_dir.mkdir()
    (config_dir / "greeting").write_text("hi from the configmap")
    pod = make_pod(busybox("main", "sleep 1000"))
    _, container = await start_pod(
        cri_runtime,
        pod,
        tmp_path / "logs",
        env={"MODE": "edge", "LEVEL": "3"},
        mounts=[Mount("/etc/config", str(config_dir), read_only=True)],
    )

    result = await cri_runtime.exec_sync(
        container, ["sh", "-c", "echo $MODE-$LEVEL; cat /etc/config/greeting"], 5
    )
    assert result.stdout == b"edge-3\nhi from the configmap"
    readonly = await cri_runtime.exec_sync(container, ["sh", "-c", "echo x > /etc/config/new"], 5)
    assert readonly.exit_code != 0
    (config_dir / "greeting").write_text("changed")  # a ConfigMap update is seen in the running container
    changed = await cri_runtime.exec_sync(container, ["cat", "/etc/config/greeting"], 5)
    assert changed.stdout == b"changed"


async def test_unavailable_runtime_and_missing_objects_are_translated(
    containerd: Containerd, tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    async with ContainerRuntime(str(tmp_path / "nothing.sock"), timeout=2.0, registry=registry) as absent:
        with pytest.raises(RuntimeUnavailableError) as unavailable:
            await absent.version()
    assert unavailable.value.address == f"unix://{tmp_path / 'nothing.sock'}"

    async with ContainerRuntime(containerd.endpoint, registry=registry) as runtime:
        with pytest.raises(RuntimeNotFoundError) as missing:
            await runtime.stop_container("f" * 64, timeout=0)
        with pytest.raises(ImageImportError) as bad_archive:
            await runtime.import_image(tmp_path / "missing.tar")
        not_an_archive = tmp_path / "junk.tar"
        not_an_archive.write_bytes(b"not a tar")
        with pytest.raises(ImageImportError) as junk:
            await runtime.import_image(not_an_archive)
    assert missing.value.method == "StopContainer"
    assert bad_archive.value.reason == "no such file"
    assert junk.value.archive == not_an_archive
    assert junk.value.reason
    assert (
        registry.get_sample_value("edgetwin_cri_errors_total", {"method": "Version", "code": "UNAVAILABLE"})
        == 1
    )
    assert (
        registry.get_sample_value(
            "edgetwin_cri_errors_total", {"method": "StopContainer", "code": "NOT_FOUND"}
        )
        == 1
    )
