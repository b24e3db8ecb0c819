"""Reliable delivery both ways over real mutual TLS: link cuts, CloudHub and edge restarts, refusals.

Between edge and cloud sits a TCP relay standing in for the network: cutting it aborts every TCP connection
in both directions, as a broken link does.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloudsync import Group, Message, Operation, encode
from edgetwin.testing import wait_for
from tests.integration import test_cloudhub as hub
from tests.integration.test_cloudhub import Cloud, EdgeRecorder, Edges, raw_session, update

# The fixtures of the CloudHub tests: certificates, a running cloud, an edge factory.
pki = hub.pki
cloud = hub.cloud
edges = hub.edges


class Relay:
    """A loopback TCP relay to CloudHub; :meth:`cut` aborts every connection through it."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.WriteTransport] = set()
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        self.cuts += 1
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        for pipe in list(self._pipes):
            pipe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pipe
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._transports |= {writer.transport, up_writer.transport}
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            pipe = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(pipe)
            pipe.add_done_callback(self._pipes.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            sink.transport.abort()
            self._transports.discard(sink.transport)


@pytest.fixture
async def relay(cloud: Cloud) -> AsyncIterator[Relay]:
    running = Relay(cloud.port)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


def obj(resource: str, version: int, content: object = None) -> Message:
    """A cloud → edge object message, as a controller sends it."""
    return Message.new(
        source="devicecontroller",
        group=Group.RESOURCE,
        operation=Operation.UPDATE,
        resource=resource,
        content=content if content is not None else {"v": version},
        resource_version=str(version),
    )


def versions_by_resource(recorder: EdgeRecorder) -> dict[str, list[int]]:
    applied: dict[str, list[int]] = {}
    for message in recorder.messages:
        applied.setdefault(message.resource, []).append(int(message.header.resource_version))
    return applied


async def test_both_ways_exactly_once_and_in_order_while_the_link_is_cut(
    cloud: Cloud, edges: Edges, relay: Relay
) -> None:
    recorder = EdgeRecorder()
    edge = await edges.start(
        "node-a", recorder=recorder, server=f"127.0.0.1:{relay.port}", registry=cloud.registry
    )
    await wait_for(lambda: edge.connected)
    version = 0
    up = 0

    async def burst(count: int) -> None:
        nonlocal version, up
        for _ in range(count):
            version += 1
            # Ten objects updated over and over (per-object order), one new object each time (exactly once).
            await cloud.running.send("node-a", obj(f"default/configmap/cm-{version % 10}", version))
            await cloud.running.send("node-a", obj(f"default/pod/p-{version}", version))
            await edge.send(update({"seq": up}))
            up += 1

    for _ in range(4):
        delivered = len(cloud.recorder.messages["node-a"])
        sending = asyncio.create_task(burst(60))
        await wait_for(lambda: len(cloud.recorder.messages["node-a"]) > delivered + 5, what="traffic flows")  # noqa: B023 - awaited within the iteration
        relay.cut()  # in the middle of the burst
        await sending
        await burst(10)  # and some more while the link is down
        await wait_for(lambda: edge.connected, what="reconnect through the relay")

    await wait_for(
        lambda: len(cloud.recorder.messages["node-a"]) >= up, timeout=15, what="edge→cloud delivered"
    )
    await wait_for(lambda: edge.unacknowledged == 0, timeout=15)
    assert cloud.recorder.contents("node-a") == [{"seq": seq} for seq in range(up)]

    def cloud_to_edge_done() -> bool:
        applied = versions_by_resource(recorder)
        return all(f"default/pod/p-{v}" in applied for v in range(1, version + 1)) and all(
            applied.get(f"default/configmap/cm-{v % 10}", [0])[-1] == v
            for v in range(version - 9, version + 1)
        )

    await wait_for(cloud_to_edge_done, timeout=15, what="cloud→edge delivered")
    applied = versions_by_resource(recorder)
    for resource, seen in applied.items():
        assert seen == sorted(set(seen)), f"{resource}: applied twice or out of order: {seen}"
    assert all(applied[f"default/pod/p-{v}"] == [v] for v in range(1, version + 1))
    assert relay.cuts == 4
    # The cuts hit messages in flight: both sides had to send some again.
    assert cloud.metric("cloudsync_resends_total", side="cloud") >= 1
    assert cloud.metric("cloudsync_resends_total", side="edge") >= 1
    await wait_for(lambda: cloud.metric("cloudsync_acks_pending", side="cloud") == 0)


async def test_a_cloudhub_restart_loses_nothing_acknowledged_and_sends_nothing_twice(
    cloud: Cloud, edges: Edges
) -> None:
    recorder = EdgeRecorder()
    edge = await edges.start("node-a", recorder=recorder)
    await wait_for(lambda: edge.connected)
    current = [obj(f"default/device/d{i}", 10 + i) for i in range(5)]
    for message in current:
        await cloud.running.send("node-a", message)
    await wait_for(lambda: len(recorder.messages) == 5)
    await wait_for(lambda: len(cloud.acks.versions) == 5, what="acks recorded")

    await cloud.stop()
    for seq in range(10):  # edge → cloud while the cloud is down
        await edge.send(update({"seq": seq}))
    await cloud.start()
    # After a restart the controllers send every object again (a re-list), and one new version.
    for message in current:
        await cloud.running.send("node-a", obj(message.resource, int(message.header.resource_version)))
    await cloud.running.send("node-a", obj("default/device/d0", 20))

    await wait_for(
        lambda: cloud.recorder.contents("node-a") == [{"seq": seq} for seq in range(10)], timeout=10
    )
    await wait_for(lambda: len(recorder.messages) == 6, timeout=10)
    assert versions_by_resource(recorder)["default/device/d0"] == [10, 20]
    assert cloud.metric("cloudsync_skipped_total", side="cloud") == 5
    await wait_for(lambda: edge.unacknowledged == 0)


async def test_an_edge_restart_sends_what_the_cloud_did_not_acknowledge(cloud: Cloud, edges: Edges) -> None:
    await cloud.stop()
    edge = await edges.start("node-a")
    for seq in range(10):
        await edge.send(update({"seq": seq}))
    await edges.stop(edge)  # the edge goes down with ten messages in its outbox

    await cloud.start()
    restarted = await edges.start("node-a")

    await wait_for(
        lambda: cloud.recorder.contents("node-a") == [{"seq": seq} for seq in range(10)], timeout=10
    )
    await wait_for(lambda: restarted.unacknowledged == 0)
    assert len(cloud.recorder.messages["node-a"]) == 10


async def test_an_edge_restart_does_not_apply_a_version_twice(cloud: Cloud, edges: Edges) -> None:
    first = EdgeRecorder()
    edge = await edges.start("node-a", recorder=first)
    await cloud.running.send("node-a", obj("default/device/d1", 5))
    await wait_for(lambda: len(first.messages) == 1)
    await edges.stop(edge)
    # The cloud lost its record of the acknowledgement (a store that failed): it sends the version again.
    cloud.acks.versions.clear()
    await cloud.stop()
    await cloud.start()

    second = EdgeRecorder()
    await edges.start("node-a", recorder=second)
    await cloud.running.send("node-a", obj("default/device/d1", 5))
    await cloud.running.send("node-a", obj("default/device/d2", 6))

    await wait_for(lambda: [m.resource for m in second.messages] == ["default/device/d2"])
    await wait_for(lambda: cloud.acks.versions.get(("node-a", "default/device/d1")) == "5", what="re-acked")


async def test_a_message_the_cloud_fails_to_handle_is_sent_again(cloud: Cloud, edges: Edges) -> None:
    cloud.recorder.refuse = 1
    edge = await edges.start("node-a", registry=cloud.registry)

    await edge.send(update({"seq": 0}))

    await wait_for(lambda: cloud.recorder.contents("node-a") == [{"seq": 0}], timeout=5)
    await wait_for(lambda: edge.unacknowledged == 0)
    assert cloud.metric("cloudsync_handler_errors_total", side="cloud") == 1
    assert cloud.metric("cloudsync_resends_total", side="edge") >= 1


async def test_a_message_the_edge_fails_to_apply_is_sent_again(cloud: Cloud, edges: Edges) -> None:
    recorder = EdgeRecorder(refuse=1)
    await edges.start("node-a", recorder=recorder)

    await cloud.running.send("node-a", obj("default/device/d1", 7))

    await wait_for(lambda: len(recorder.messages) == 1, timeout=5)
    await wait_for(lambda: cloud.acks.versions.get(("node-a", "default/device/d1")) == "7")
    assert cloud.metric("cloudsync_resends_total", side="cloud") >= 1


async def test_queued_versions_supersede_older_ones_and_acked_versions_are_skipped(
    cloud: Cloud, edges: Edges
) -> None:
    for version in (3, 4, 5):  # queued while the node is away
        await cloud.running.send("node-a", obj("default/device/d1", version))
    await cloud.running.send("node-a", obj("default/device/d1", 2))  # older than what is queued
    await cloud.running.send("node-a", obj("node/node-a/default/device/d2", 1))  # cloud-side resource

    recorder = EdgeRecorder()
    await edges.start("node-a", recorder=recorder)

    await wait_for(lambda: len(cloud.acks.versions) == 2)
    assert [(m.resource, m.header.resource_version) for m in recorder.messages] == [
        ("default/device/d1", "5"),
        ("default/device/d2", "1"),
    ]
    await cloud.running.send("node-a", obj("default/device/d1", 5))  # already acknowledged
    assert cloud.metric("cloudsync_skipped_total", side="cloud") == 2
    assert cloud.metric("cloudsync_acks_pending", side="cloud") == 0


async def test_best_effort_messages_go_only_to_connected_nodes(cloud: Cloud, edges: Edges) -> None:
    await cloud.running.send("node-a", update({"lost": True}))
    recorder = EdgeRecorder()
    edge = await edges.start("node-a", recorder=recorder)
    await wait_for(lambda: edge.connected and cloud.running.connected_nodes() == {"node-a"})

    await cloud.running.send("node-a", update({"kept": True}))

    await wait_for(lambda: recorder.contents() == [{"kept": True}])
    assert cloud.metric("cloudsync_dropped_total", side="cloud") == 1


async def test_the_cloud_acknowledges_a_repeated_message_without_handling_it_twice(cloud: Cloud) -> None:
    session = await raw_session(cloud, "node-a")
    message = update({"once": True})

    for _ in range(2):
        await session.send(encode(message))
        ack = Message.model_validate_json(await session.recv())
        assert ack.header.parent_msg_id == message.msg_id

    assert cloud.recorder.contents("node-a") == [{"once": True}]
    assert cloud.metric("cloudsync_duplicates_total", side="cloud") == 1
    await session.close()


async def test_the_outbox_is_durable_before_send_returns(cloud: Cloud, edges: Edges, tmp_path: Path) -> None:
    await cloud.stop()
    edge = await edges.start("node-a")
    await edge.send(update({"seq": 1}))

    # Another connection sees the committed row at once.
    with contextlib.closing(sqlite3.connect(tmp_path / "node-a.db")) as db:
        assert db.execute("SELECT count(*) FROM outbox").fetchone() == (1,)
