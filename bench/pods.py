"""Edged: pod create -> Running latency over 50 pods, and the process's memory with 50 pods running.

Setup: a private containerd + runc (as the tests start it, needs root) with the busybox image archive
imported, a MetaManager on a fresh SQLite file and an Edged on them (host network, the default relist of
1 s and resync of 10 s). The cloud is played by ``MetaManager.received`` (what the EdgeController sends);
the link upwards records the time of each status report. Figures:

* ``sequential``: 50 pods created one after the other, each once the previous one is Running;
* ``burst``: 50 pods created at once (a node coming back with its pods); ``all_ready_s`` is the time
  until the last one is ready;

each pod's latency is from ``received`` returning (the pod is durable on the edge) to Edged reporting
phase Running (``running``: the container started) and Running with the container ready (``ready``: after
its exec readiness probe first passed, an ``runc exec`` that costs a few hundred ms); p50 / p99 / max in ms.
* ``rss_mb``: resident memory of this process (Edged + MetaManager + the asyncio/gRPC runtime, what
  edgecore adds for pods; containerd and the shims are separate processes) before Edged starts, and with the
  50 burst pods running.

Run (as root): ``.venv/bin/python bench/pods.py``.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from cloudsync import Message, Operation
from edgecore import MetaManager
from edgecore.edged import ContainerRuntime, Edged
from edgetwin.testing import wait_for
from edgetwin.testing.containerd import BUSYBOX_IMAGE, Containerd, build_busybox_archive, containerd_missing

PODS = 50
NODE = "edge-1"


def pod(name: str) -> dict[str, Any]:
    """A pod as the cloud sends it: one busybox container with a readiness probe and a memory limit."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": str(uuid.uuid4()), "resourceVersion": "1"},
        "spec": {
            "nodeName": NODE,
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


def rss_mb() -> float:
    """This process's resident memory (VmRSS) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
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


async def run(workdir: Path, containerd: Containerd) -> dict[str, Any]:
    async with ContainerRuntime(containerd.endpoint, cgroup_parent=containerd.cgroup_parent) as runtime:
        await runtime.import_image(build_busybox_archive(workdir / "busybox-oci.tar"))
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
        "pods": PODS,
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
