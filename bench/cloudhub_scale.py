"""CloudHub at scale: N edge connections over mutual TLS on loopback; prints one JSON document.

For each N (``--nodes``, default 100, 500 and 2,000) one run starts a fresh CloudHub process (a
:class:`cloudsync.CloudLink`, so its RSS is its own) and ``--client-processes`` processes of lightweight edge
clients (:class:`cloudsync.EdgeHub`: the real transport with its keepalives and pings, answering each object
message with an acknowledgement, without the SQLite outbox of a full edge). It reports:

* ``connected`` and ``connect_s``: the sessions the hub holds and how long it took to get them all;
* ``keepalive``: over ``--hold`` seconds, keepalives received against those expected (one per node and
  ``--heartbeat``), and the lag from the edge stamping one (``header.timestamp``) to the hub's handler,
  p50 / p99 / max in milliseconds;
* ``cloud_rss_mib`` (before any node and with all connected) and ``rss_per_node_kib``;
* ``cloud_to_edge``: ``--messages`` object messages spread over the nodes, timed from the first send until
  the last acknowledgement is back, as messages per second.

Both sides run on :func:`edgetwin.runtime.run` (uvloop when installed), as the daemons do; this matters for
memory: asyncio's own TLS transport zero-fills a 256 KiB read buffer per connection, uvloop's allocates it
without touching it. Run: ``.venv/bin/python bench/cloudhub_scale.py [--nodes 100,500,2000] [--heartbeat 5]``.
The hub and the clients share the machine's CPUs: read the lag figures with ``machine.loadavg``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import resource
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloudsync import (
    EDGE_LINK_SOURCE,
    CertificateAuthority,
    CloudHubSettings,
    CloudLink,
    EdgeHub,
    EdgeHubSettings,
    Group,
    LinkMetrics,
    MemoryAckStore,
    Message,
    Operation,
    client_ssl_context,
    server_ssl_context,
)
from edgetwin import runtime
from edgetwin.testing import WaitTimeout, free_port, wait_for
from eventbus import BackoffPolicy

HERE = Path(__file__).resolve()


def raise_fd_limit() -> None:
    """Each connection is a file descriptor on both sides: lift the soft limit to the hard one."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def node_name(index: int) -> str:
    return f"bench-node-{index:05d}"


# ---------------------------------------------------------------- cloud process


class CloudSide:
    """The hub's handler: counts keepalives and their lag; commands come on stdin, answers go to stdout."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.keepalives = 0
        self.sent = 0

    async def node_connected(self, node: str) -> None:
        """Nothing to do: the hub counts sessions."""

    async def node_disconnected(self, node: str) -> None:
        """Nothing to do: the hub counts sessions."""

    async def received(self, node: str, message: Message) -> None:
        if message.operation is Operation.KEEPALIVE:
            self.keepalives += 1
            self.lags.append(time.time() * 1000 - message.header.timestamp)


async def cloud_main(directory: Path, port: int) -> None:
    raise_fd_limit()
    ca = CertificateAuthority.from_pem(
        (directory / "ca.crt").read_bytes(), (directory / "ca.key").read_bytes()
    )
    context = server_ssl_context(
        ca.cert_pem(),
        (directory / "server.crt").read_bytes(),
        (directory / "server.key").read_bytes(),
        require_client_cert=False,
    )
    side = CloudSide()
    link = CloudLink(
        side,
        MemoryAckStore(),
        ssl_context=context,
        settings=CloudHubSettings(host="127.0.0.1", port=port, keepalive_timeout=60),
        ack_timeout=30,
    )
    await link.start()
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps({"ready": True}), flush=True)
    version = 0
    while line := (await reader.readline()).decode().strip():
        command, _, argument = line.partition(" ")
        if command == "stats":
            lags = sorted(side.lags)
            print(
                json.dumps(
                    {
                        "connected": len(link.connected_nodes()),
                        "keepalives": side.keepalives,
                        "lags": _percentiles(lags),
                    }
                ),
                flush=True,
            )
        elif command == "reset":
            side.lags.clear()
            side.keepalives = 0
            print(json.dumps({"reset": True}), flush=True)
        elif command == "send":
            nodes = sorted(link.connected_nodes())
            count = int(argument)
            started = time.perf_counter()
            for n in range(count):
                version += 1
                await link.send(
                    nodes[n % len(nodes)],
                    Message.new(
                        source="edgecontroller",
                        group=Group.RESOURCE,
                        operation=Operation.UPDATE,
                        resource=f"default/configmap/cm-{n}",
                        content={"data": {"n": str(n)}},
                        resource_version=str(version),
                    ),
                )
            await wait_for(lambda: link.unacknowledged == 0, timeout=300, interval=0.005)
            elapsed = time.perf_counter() - started
            print(
                json.dumps(
                    {"messages": count, "seconds": round(elapsed, 3), "per_second": round(count / elapsed, 1)}
                ),
                flush=True,
            )
        elif command == "quit":
            break
    await link.stop()


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    return {
        "p50": round(statistics.median(values), 2),
        "p99": round(values[min(len(values) - 1, int(len(values) * 0.99))], 2),
        "max": round(values[-1], 2),
    }


# ---------------------------------------------------------------- edge clients process


class EdgeSide:
    """A lightweight edge: acknowledges every object message at once."""

    def __init__(self) -> None:
        self.hub: EdgeHub | None = None
        self.received = 0

    async def hub_connected(self) -> None:
        """Nothing to resend: no outbox."""

    async def hub_disconnected(self) -> None:
        """Reconnects by itself."""

    async def hub_received(self, message: Message) -> None:
        self.received += 1
        if message.header.resource_version and self.hub is not None:
            await self.hub.send(message.response(source=EDGE_LINK_SOURCE))


async def edges_main(directory: Path, port: int, first: int, count: int, heartbeat: float) -> None:
    raise_fd_limit()
    ca_pem = (directory / "ca.crt").read_bytes()
    metrics = LinkMetrics(None, "edge")
    hubs: list[EdgeHub] = []
    for index in range(first, first + count):
        node = node_name(index)
        cert, key = (directory / f"{node}.crt").read_bytes(), (directory / f"{node}.key").read_bytes()
        context = client_ssl_context(ca_pem, cert, key)
        side = EdgeSide()
        hub = EdgeHub(
            EdgeHubSettings(
                server=f"127.0.0.1:{port}",
                node_name=node,
                heartbeat=heartbeat,
                backoff=BackoffPolicy(minimum=0.5, maximum=5),
            ),
            _constant(context),
            side,
            metrics=metrics,
        )
        side.hub = hub
        hubs.append(hub)
    for hub in hubs:
        await hub.start()
        await asyncio.sleep(
            0.002
        )  # a connect storm of thousands of TLS handshakes at once overflows backlogs
    print(json.dumps({"started": count}), flush=True)
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.readline()  # any line, or EOF: stop
    for hub in hubs:
        await hub.stop()


def _constant(context: ssl.SSLContext) -> Callable[[], ssl.SSLContext]:
    return lambda: context


# ---------------------------------------------------------------- driver


class Child:
    """A bench process driven by lines on stdin, answering JSON lines on stdout."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, *args: str) -> Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(HERE),
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(HERE.parent.parent)},
        )
        return cls(process)

    async def answer(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"bench process {self.process.pid} exited ({await self.process.wait()})")
        result: dict[str, Any] = json.loads(line)
        return result

    async def ask(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()
        return await self.answer()

    async def stop(self) -> None:
        assert self.process.stdin is not None
        if self.process.returncode is None:
            self.process.stdin.write(b"quit\n")
            self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


def make_pki(directory: Path, nodes: int) -> None:
    ca = CertificateAuthority.create("edgetwin-bench")
    (directory / "ca.crt").write_bytes(ca.cert_pem())
    (directory / "ca.key").write_bytes(ca.key_pem())
    cert, key = ca.issue_server_cert(["127.0.0.1"], days=1)
    (directory / "server.crt").write_bytes(cert)
    (directory / "server.key").write_bytes(key)
    for index in range(nodes):
        cert, key = ca.issue_node_cert(node_name(index), days=1)
        (directory / f"{node_name(index)}.crt").write_bytes(cert)
        (directory / f"{node_name(index)}.key").write_bytes(key)


async def run_one(directory: Path, nodes: int, options: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    cloud = await Child.start("--role", "cloud", "--dir", str(directory), "--port", str(port))
    clients: list[Child] = []
    try:
        await cloud.answer()
        rss_idle = rss_kib(cloud.process.pid)
        started = time.perf_counter()
        share = -(-nodes // options.client_processes)
        clients = [
            await Child.start(
                "--role",
                "edges",
                "--dir",
                str(directory),
                "--port",
                str(port),
                "--first",
                str(first),
                "--count",
                str(min(share, nodes - first)),
                "--heartbeat",
                str(options.heartbeat),
            )
            for first in range(0, nodes, share)
        ]
        for client in clients:
            await client.answer()

        async def all_connected() -> bool:
            return bool((await cloud.ask("stats"))["connected"] >= nodes)

        with contextlib.suppress(WaitTimeout):  # reported as fewer connected than nodes
            await wait_for(all_connected, timeout=options.connect_timeout, interval=0.2)
        connect_s = time.perf_counter() - started
        await cloud.ask("reset")
        await asyncio.sleep(options.hold)  # the measurement window: keepalives arrive on their own
        stats = await cloud.ask("stats")
        rss_full = rss_kib(cloud.process.pid)
        throughput = await cloud.ask(f"send {options.messages}")
        return {
            "nodes": nodes,
            "connected": stats["connected"],
            "connect_s": round(connect_s, 2),
            "keepalive": {
                "received": stats["keepalives"],
                "expected": nodes * round(options.hold / options.heartbeat),
                "lag_ms": stats["lags"],
            },
            "cloud_rss_mib": {"idle": round(rss_idle / 1024, 1), "connected": round(rss_full / 1024, 1)},
            "rss_per_node_kib": round((rss_full - rss_idle) / max(1, stats["connected"]), 1),
            "cloud_to_edge": throughput,
        }
    finally:
        for client in clients:
            await client.stop()
        await cloud.stop()


async def drive(options: argparse.Namespace) -> dict[str, Any]:
    raise_fd_limit()
    counts = [int(n) for n in options.nodes.split(",")]
    with tempfile.TemporaryDirectory(prefix="cloudhub-bench-") as tmp:
        directory = Path(tmp)
        make_pki(directory, max(counts))
        runs = [await run_one(directory, n, options) for n in counts]
    return {
        "machine": {"cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()]},
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "heartbeat_s": options.heartbeat,
        "hold_s": options.hold,
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--role", choices=["driver", "cloud", "edges"], default="driver", help=argparse.SUPPRESS
    )
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--nodes", default="100,500,2000", help="comma-separated node counts")
    parser.add_argument("--heartbeat", type=float, default=5.0, help="edge keepalive interval (s)")
    parser.add_argument("--hold", type=float, help="keepalive measurement window (s; two heartbeats)")
    parser.add_argument("--messages", type=int, default=5000, help="cloud→edge messages for the throughput")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--connect-timeout", type=float, default=60.0)
    options = parser.parse_args()
    options.hold = options.hold or 2 * options.heartbeat
    if options.role == "cloud":
        runtime.run(cloud_main(options.dir, options.port))
    elif options.role == "edges":
        runtime.run(edges_main(options.dir, options.port, options.first, options.count, options.heartbeat))
    else:
        print(json.dumps(asyncio.run(drive(options)), indent=2))


if __name__ == "__main__":
    main()
