"""MetaServer list latency with 1,000 pods stored; prints one JSON document.

Setup: a MetaManager on a fresh SQLite file receives 1,000 pods (about 2 KB of JSON each, as the cloud sends
them) through ``received``, then a MetaServer serves them on a free loopback port. A client in a separate
process (plain ``http.client``, one keep-alive connection, requests one after the other) measures:

* ``list_all``: ``GET /api/v1/pods`` (all 1,000 pods);
* ``list_selected``: ``GET /api/v1/namespaces/default/pods?labelSelector=app=app-7`` (10 pods);
* ``get``: ``GET /api/v1/namespaces/default/pods/pod-500``.

Each reports p50 / p99 / max in milliseconds over its requests; the first list encodes every pod's JSON
(the MetaServer then keeps it until the pod changes), so with 100 lists the p99 and max are that cold one.
``ingest`` is the time to store the 1,000 pods (received concurrently, so they share transactions).
``list_all`` answers about 1.5 MB of JSON. Run: ``.venv/bin/python bench/metaserver.py``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cloudsync import Message, Operation
from edgecore import MetaManager, MetaServer
from edgetwin.testing import free_port

PODS = 1000
REQUESTS = {"list_all": 100, "list_selected": 300, "get": 300}

# The client runs in its own process so that it does not share the server's event loop or GIL.
CLIENT = """
import http.client, json, sys, time
host, port, requests = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
paths = {
    "list_all": "/api/v1/pods",
    "list_selected": "/api/v1/namespaces/default/pods?labelSelector=app%3Dapp-7",
    "get": "/api/v1/namespaces/default/pods/pod-500",
}
conn = http.client.HTTPConnection(host, port)
result = {}
for name, count in requests.items():
    times, size, items = [], 0, 0
    for _ in range(count):
        started = time.perf_counter()
        conn.request("GET", paths[name])
        response = conn.getresponse()
        body = response.read()
        times.append((time.perf_counter() - started) * 1000)
        assert response.status == 200, body[:200]
        size = len(body)
    decoded = json.loads(body)
    items = len(decoded.get("items", [decoded]))
    times.sort()
    result[name] = {
        "requests": count,
        "items": items,
        "bytes": size,
        "p50_ms": round(times[len(times) // 2], 2),
        "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 2),
        "max_ms": round(times[-1], 2),
    }
print(json.dumps(result))
"""


def pod(index: int) -> dict[str, Any]:
    """A pod as the cloud sends it, with the usual spec and status (about 2 KB of JSON)."""
    name = f"pod-{index}"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": f"00000000-0000-0000-0000-{index:012d}",
            "resourceVersion": str(1000 + index),
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"app": f"app-{index % 100}", "tier": "edge"},
            "annotations": {"edgetwin.io/bench": "true"},
        },
        "spec": {
            "nodeName": "edge-1",
            "restartPolicy": "Always",
            "tolerations": [
                {"key": "node-role.kubernetes.io/edge", "operator": "Exists", "effect": "NoSchedule"}
            ],
            "containers": [
                {
                    "name": "main",
                    "image": "registry.local/app:1.0",
                    "command": ["/bin/sh", "-c"],
                    "args": ["while true; do date; sleep 5; done"],
                    "env": [{"name": f"VAR_{i}", "value": f"value-{i}"} for i in range(8)],
                    "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
                    "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}],
                }
            ],
            "volumes": [{"name": "config", "configMap": {"name": f"config-{index % 10}"}}],
        },
        "status": {
            "phase": "Running",
            "podIP": f"10.88.{index // 250}.{index % 250 + 2}",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:05Z"}],
            "containerStatuses": [
                {
                    "name": "main",
                    "ready": True,
                    "restartCount": 0,
                    "image": "registry.local/app:1.0",
                    "imageID": "sha256:" + "0" * 64,
                    "containerID": f"containerd://{index:064d}",
                    "state": {"running": {"startedAt": "2026-01-01T00:00:04Z"}},
                }
            ],
        },
    }


async def run(database: Path) -> dict[str, Any]:
    async with MetaManager(database) as meta:
        started = time.perf_counter()
        await asyncio.gather(
            *(
                meta.received(
                    Message.new(
                        source="edgecontroller",
                        group="resource",
                        operation=Operation.INSERT,
                        resource=f"default/pod/pod-{index}",
                        content=pod(index),
                    )
                )
                for index in range(PODS)
            )
        )
        ingest = time.perf_counter() - started
        server = MetaServer(meta, f"127.0.0.1:{free_port()}")
        await server.start()
        try:
            client = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                CLIENT,
                "127.0.0.1",
                str(server.port),
                json.dumps(REQUESTS),
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await client.communicate()
        finally:
            await server.stop()
    if client.returncode != 0:
        raise RuntimeError(f"the benchmark client failed with exit code {client.returncode}")
    return {
        "pods": PODS,
        "ingest": {"seconds": round(ingest, 3), "pods_per_s": round(PODS / ingest)},
        **json.loads(out),
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-metaserver-") as tmp:
        print(json.dumps(asyncio.run(run(Path(tmp) / "edgecore.db")), indent=2))


if __name__ == "__main__":
    main()
