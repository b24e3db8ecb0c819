"""Pods on an edge: create -> Running latency over 50 pods, edgecore's memory with 50 pods, two ways.

Both parts use a private containerd + runc (as the tests start it, needs root) with the busybox image archive
imported. Latencies are p50 / p99 / max in ms.

``edged`` — Edged alone, in this process: a MetaManager on a fresh SQLite file and an Edged on them (host
network, the default relist of 1 s and resync of 10 s). The cloud is played by ``MetaManager.received`` (what
the EdgeController sends); the link upwards records the time of each status report.

* ``sequential``: 50 pods created one after the other, each once the previous one is Running;
* ``burst``: 50 pods created at once (a node coming back with its pods); ``all_ready_s`` is the time
  until the last one is ready;

each pod's latency is from ``received`` returning (the pod is durable on the edge) to Edged reporting
phase Running (``running``: the container started) and Running with the container ready (``ready``: after
its exec readiness probe first passed, an ``runc exec`` that costs a few hundred ms).
* ``rss_mb``: resident memory of this process (Edged + MetaManager + the asyncio/gRPC runtime, what
  edgecore adds for pods; containerd and the shims are separate processes) before Edged starts, and with the
  50 burst pods running.

``chain`` — the whole path: a Kubernetes API (the real kube-apiserver + etcd where installed, else the
emulator), cloudcore in this process, and an edge joined with ``edgetwin join`` running ``edgetwin edgecore``
as a separate process (Edged + MetaManager + MetaServer + the link; its internal mosquitto is a process of
its own, not counted).

* ``sequential`` / ``burst``: from the Pod's ``POST`` returning to the API showing it ``phase: Running``
  (seen on a watch of the namespace): EdgeController -> link -> MetaManager -> Edged -> containerd ->
  status report -> link -> EdgeController's status patch;
* ``edgecore_rss_mb``: VmRSS of the edgecore process once the node is Ready (no pods), and with the 50 burst
  pods running.

Run (as root): ``.venv/bin/python bench/pods.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from cloudcore import KubeNotFoundError
from cloudcore.kube import ensure_namespace, request
from cloudcore.watch import watch
from cloudsync import Message, Operation
from edgecore import MetaManager, dump_config
from edgecore.edged import ContainerRuntime, Edged
from edgetwin.testing import wait_for
from edgetwin.testing.cluster import cloud_config, join_edge, run_pods, running_cloud
from edgetwin.testing.containerd import BUSYBOX_IMAGE, Containerd, build_busybox_archive, containerd_missing
from edgetwin.testing.kubeapi import start_kube_api

PODS = 50
NODE = "edge-1"
NAMESPACE = "bench-pods"
EDGETWIN = Path(sys.executable).with_name("edgetwin")


def pod(name: str, node: str = NODE) -> dict[str, Any]:
    """A pod as the cloud sends it: one busybox container with a readiness probe and a memory limit."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": str(uuid.uuid4()), "resourceVersion": "1"},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 0,
            "tolerations": [
                {"key": "node-role.kubernetes.io/edge", "operator": "Exists", "effect": "NoSchedule"}
            ],
            "containers": [
                {
                    "name": "main",
                    "image": BUSYBOX_IMAGE,
                    "command": ["sh", "-c", "while true; do sleep 5; done"],
                    "resources": {"limits": {"memory": "16Mi"}},
                    "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 10},
                }
            ],
        },
    }


def rss_mb(pid: int | str = "self") -> float:
    """A process's resident memory (VmRSS) in MB, this one's by default."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


class RunningTimes:
    """The cloud link: records when each pod is first reported Running, and Running with its container
    ready (after the readiness probe's first pass)."""

    def __init__(self) -> None:
        self.running: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        self._events: dict[str, asyncio.Event] = {}

    def event(self, name: str) -> asyncio.Event:
        """Set once the pod is Running and ready."""
        return self._events.setdefault(name, asyncio.Event())

    async def __call__(self, message: Message) -> None:
        if message.operation != Operation.UPDATE:
            return
        name, status = message.content["Name"], message.content["Status"]
        if status["phase"] != "Running":
            return
        self.running.setdefault(name, time.perf_counter())
        if all(item["ready"] for item in status["containerStatuses"]) and name not in self.ready:
            self.ready[name] = time.perf_counter()
            self.event(name).set()


def latencies(created: dict[str, float], reached: dict[str, float]) -> dict[str, float]:
    """p50 / p99 / max (ms) from each pod's creation to the time it reached a state."""
    ordered = sorted(reached[name] - at for name, at in created.items())
    return {
        "p50_ms": round(ordered[len(ordered) // 2] * 1000, 1),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


async def create(meta: MetaManager, obj: dict[str, Any]) -> float:
    """Send the pod as the EdgeController does; return when it is durable on the edge."""
    resource = f"default/pod/{obj['metadata']['name']}"
    message = Message.new(
        source="edgecontroller", group="resource", operation=Operation.INSERT, resource=resource, content=obj
    )
    await meta.received(message)
    return time.perf_counter()


async def delete_all(meta: MetaManager, edged: Edged, names: list[str]) -> None:
    """Delete the pods as the cloud does; return once Edged removed their sandboxes."""
    for name in names:
        message = Message.new(
            source="edgecontroller",
            group="resource",
            operation=Operation.DELETE,
            resource=f"default/pod/{name}",
        )
        await meta.received(message)

    async def removed() -> bool:
        return not await edged.runtime.list_pod_sandboxes()

    await wait_for(removed, timeout=120, interval=0.2, what="every pod removed")


async def run_edged(workdir: Path, containerd: Containerd) -> dict[str, Any]:
    """The ``edged`` figures (see the module docstring)."""
    times = RunningTimes()
    async with MetaManager(workdir / "edgecore.db") as meta:
        before = rss_mb()
        edged = Edged(
            meta,
            containerd.endpoint,
            NODE,
            root_dir=workdir / "edged",
            report=times,
            cgroup_parent=containerd.cgroup_parent,
        )
        await edged.start()
        try:
            sequential: dict[str, float] = {}
            for index in range(PODS):
                name = f"seq-{index}"
                sequential[name] = await create(meta, pod(name))
                await asyncio.wait_for(times.event(name).wait(), 60)
            await delete_all(meta, edged, [f"seq-{index}" for index in range(PODS)])

            names = [f"burst-{index}" for index in range(PODS)]
            started = time.perf_counter()
            created_at = await asyncio.gather(*(create(meta, pod(name)) for name in names))
            await asyncio.wait_for(asyncio.gather(*(times.event(name).wait() for name in names)), 120)
            all_ready = time.perf_counter() - started
            burst = dict(zip(names, created_at, strict=True))
            with_pods = rss_mb()
            await delete_all(meta, edged, names)
        finally:
            await edged.stop()
    return {
        "sequential": {
            "running": latencies(sequential, times.running),
            "ready": latencies(sequential, times.ready),
        },
        "burst": {
            "running": latencies(burst, times.running),
            "ready": latencies(burst, times.ready),
            "all_ready_s": round(all_ready, 2),
        },
        "rss_mb": {"before_edged": before, "with_50_pods": with_pods},
    }


class ApiRunning:
    """When each Pod of a namespace is first seen with ``phase: Running`` on a watch of the API."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    async def follow(self, api: k8s.ApiClient, namespace: str) -> None:
        """Watch the namespace's Pods until cancelled (resuming after the server ends a watch)."""
        path = f"/api/v1/namespaces/{namespace}/pods"
        version = str((await request(api, "GET", path))["metadata"]["resourceVersion"])
        while True:
            async with watch(api, path, version, timeout_seconds=300) as events:
                async for kind, obj in events:
                    version = str(obj["metadata"]["resourceVersion"])
                    if kind != "BOOKMARK" and (obj.get("status") or {}).get("phase") == "Running":
                        self.times.setdefault(obj["metadata"]["name"], time.perf_counter())

    async def wait(self, names: list[str], timeout: float) -> None:
        """Return once every pod of ``names`` was seen Running."""
        await wait_for(lambda: all(name in self.times for name in names), timeout=timeout, what="Running")


async def create_in_api(api: k8s.ApiClient, name: str, node: str) -> float:
    """Create the Pod in the API; return when the API has it."""
    manifest = pod(name, node)
    manifest["metadata"] = {"name": name}
    await request(api, "POST", f"/api/v1/namespaces/{NAMESPACE}/pods", body=manifest)
    return time.perf_counter()


async def delete_in_api(api: k8s.ApiClient, names: list[str]) -> None:
    """Delete the Pods (gracefully: the edge stops them and reports the delete); return once they are gone."""
    for name in names:
        await request(api, "DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods/{name}")

    async def gone() -> bool:
        return not (await request(api, "GET", f"/api/v1/namespaces/{NAMESPACE}/pods"))["items"]

    await wait_for(gone, timeout=120, interval=0.2, what="every pod deleted")


async def node_ready(api: k8s.ApiClient, node: str) -> None:
    async def ready() -> bool:
        try:
            found = await request(api, "GET", f"/api/v1/nodes/{node}")
        except KubeNotFoundError:
            return False
        conditions = (found.get("status") or {}).get("conditions") or []
        return any(item["type"] == "Ready" and item["status"] == "True" for item in conditions)

    await wait_for(ready, timeout=60, interval=0.1, what=f"node {node} Ready")


@contextlib.asynccontextmanager
async def edgecore_process(config: Path, log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """``edgetwin edgecore --config`` as a process of its own; stopped (SIGTERM) on exit."""
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            EDGETWIN, "edgecore", "--config", str(config), stdout=out, stderr=asyncio.subprocess.STDOUT
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), 30)


async def run_chain(workdir: Path, containerd: Containerd) -> dict[str, Any]:
    """The ``chain`` figures (see the module docstring)."""
    node = "bench-edge"
    async with start_kube_api("auto", workdir / "kubeapi") as kube:
        api = kube.api_client()
        try:
            await ensure_namespace(api, NAMESPACE)
            async with running_cloud(api, cloud_config(NAMESPACE)) as cloud:
                config = await asyncio.to_thread(join_edge, cloud, node, workdir / "edge")
                run_pods(
                    config,
                    containerd.endpoint,
                    workdir / "edge" / "edged",
                    cgroup_root=containerd.cgroup_parent,
                )
                config_file = workdir / "edge" / "edgecore-bench.yaml"
                config_file.write_text(dump_config(config))
                async with edgecore_process(config_file, workdir / "edge" / "edgecore.log") as process:
                    await node_ready(api, node)
                    idle = rss_mb(process.pid)
                    seen = ApiRunning()
                    follower = asyncio.create_task(seen.follow(api, NAMESPACE))
                    try:
                        sequential: dict[str, float] = {}
                        for index in range(PODS):
                            name = f"seq-{index}"
                            sequential[name] = await create_in_api(api, name, node)
                            await seen.wait([name], timeout=60)
                        await delete_in_api(api, list(sequential))

                        names = [f"burst-{index}" for index in range(PODS)]
                        started = time.perf_counter()
                        created_at = await asyncio.gather(*(create_in_api(api, name, node) for name in names))
                        await seen.wait(names, timeout=180)
                        all_running = time.perf_counter() - started
                        with_pods = rss_mb(process.pid)
                        await delete_in_api(api, names)
                    finally:
                        follower.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await follower
        finally:
            api.close()  # type: ignore[no-untyped-call]
    return {
        "kube_api": kube.backend,
        "sequential": {"running": latencies(sequential, seen.times)},
        "burst": {
            "running": latencies(dict(zip(names, created_at, strict=True)), seen.times),
            "all_running_s": round(all_running, 2),
        },
        "edgecore_rss_mb": {"node_ready_no_pods": idle, "with_50_pods": with_pods},
    }


async def run(workdir: Path, containerd: Containerd) -> dict[str, Any]:
    """Import the image, then both parts."""
    async with ContainerRuntime(containerd.endpoint, cgroup_parent=containerd.cgroup_parent) as runtime:
        await runtime.import_image(build_busybox_archive(workdir / "busybox-oci.tar"))
    return {
        "pods": PODS,
        "edged": await run_edged(workdir, containerd),
        "chain": await run_chain(workdir, containerd),
    }


def main() -> None:
    if reason := containerd_missing():
        raise SystemExit(f"cannot run: {reason}")
    with tempfile.TemporaryDirectory(prefix="bench-pods-") as tmp:
        containerd = Containerd(Path(tmp) / "containerd")
        containerd.start()
        try:
            result = asyncio.run(run(Path(tmp), containerd))
        finally:
            containerd.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
