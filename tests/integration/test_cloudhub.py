"""CloudHub and EdgeHub over real mutual TLS on loopback: handshake, refusals, keepalive, reconnect, frames.

The helpers here (certificates, recording handlers, a running cloud, an edge factory) are shared with the
reliability tests in ``test_link_reliability.py``.
"""

from __future__ import annotations

import json
import ssl
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from cloudsync import (
    CertificateAuthority,
    CloudHubSettings,
    CloudLink,
    EdgeHubSettings,
    EdgeLink,
    Group,
    LinkConnectionError,
    LinkRefusedError,
    MemoryAckStore,
    Message,
    Operation,
    client_ssl_context,
    encode,
    keepalive,
    server_ssl_context,
)
from edgetwin.testing import free_port, wait_for
from eventbus import BackoffPolicy

HEARTBEAT = 0.2
KEEPALIVE_TIMEOUT = 1.0
ACK_TIMEOUT = 0.5
FAST_BACKOFF = BackoffPolicy(minimum=0.05, maximum=0.3)


@dataclass
class LinkPki:
    """A CA, CloudHub's serving certificate and node certificates, as cloudcore and join make them."""

    ca: CertificateAuthority
    server_cert: bytes
    server_key: bytes

    @classmethod
    def create(cls) -> LinkPki:
        ca = CertificateAuthority.create("edgetwin-test")
        cert, key = ca.issue_server_cert(["127.0.0.1", "localhost"], days=1)
        return cls(ca, cert, key)

    def server_context(self) -> ssl.SSLContext:
        return server_ssl_context(
            self.ca.cert_pem(), self.server_cert, self.server_key, require_client_cert=False
        )

    def client_context(
        self, node: str | None, *, issuer: CertificateAuthority | None = None
    ) -> Callable[[], ssl.SSLContext]:
        """Client contexts trusting our CA and presenting ``node``'s certificate (issued by ``issuer``)."""
        cert: bytes | None = None
        key: bytes | None = None
        if node is not None:
            cert, key = (issuer or self.ca).issue_node_cert(node, days=1)
        return lambda: client_ssl_context(self.ca.cert_pem(), cert, key)


class CloudRecorder:
    """A cloudcore stand-in: records what the link reports; can be told to refuse the next messages."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.messages: defaultdict[str, list[Message]] = defaultdict(list)
        self.keepalives: Counter[str] = Counter()
        self.refuse = 0

    async def node_connected(self, node: str) -> None:
        self.events.append(("connected", node))

    async def node_disconnected(self, node: str) -> None:
        self.events.append(("disconnected", node))

    async def received(self, node: str, message: Message) -> None:
        if message.operation is Operation.KEEPALIVE:
            self.keepalives[node] += 1
            return
        if self.refuse:
            self.refuse -= 1
            raise RuntimeError("the API server is down (test)")
        self.messages[node].append(message)

    def contents(self, node: str) -> list[object]:
        return [message.content for message in self.messages[node]]


@dataclass
class EdgeRecorder:
    """An edgecore stand-in: records the messages it applies and the link's ups and downs."""

    messages: list[Message] = field(default_factory=list)
    connects: int = 0
    disconnects: int = 0
    refuse: int = 0

    async def received(self, message: Message) -> None:
        if self.refuse:
            self.refuse -= 1
            raise RuntimeError("disk full (test)")
        self.messages.append(message)

    async def connected(self) -> None:
        self.connects += 1

    async def disconnected(self) -> None:
        self.disconnects += 1

    def contents(self) -> list[object]:
        return [message.content for message in self.messages]


@dataclass
class Cloud:
    """A running CloudLink on a free loopback port, restartable with the same acknowledged-version store."""

    pki: LinkPki
    port: int
    recorder: CloudRecorder = field(default_factory=CloudRecorder)
    acks: MemoryAckStore = field(default_factory=MemoryAckStore)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    link: CloudLink | None = None

    @property
    def running(self) -> CloudLink:
        assert self.link is not None, "the cloud is stopped"
        return self.link

    async def start(self) -> CloudLink:
        self.link = CloudLink(
            self.recorder,
            self.acks,
            ssl_context=self.pki.server_context(),
            settings=CloudHubSettings(host="127.0.0.1", port=self.port, keepalive_timeout=KEEPALIVE_TIMEOUT),
            registry=self.registry,
            ack_timeout=ACK_TIMEOUT,
            window=8,
        )
        await self.link.start()
        return self.link

    async def stop(self) -> None:
        link, self.link = self.link, None
        if link is not None:
            await link.stop()

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def url(self, node: str) -> str:
        return f"wss://127.0.0.1:{self.port}/project/{node}/events"


class Edges:
    """Starts EdgeLinks against the cloud and stops every one of them at teardown."""

    def __init__(self, cloud: Cloud, directory: Path) -> None:
        self.cloud = cloud
        self.directory = directory
        self.running: list[EdgeLink] = []

    async def start(
        self,
        node: str,
        *,
        recorder: EdgeRecorder | None = None,
        context: Callable[[], ssl.SSLContext] | None = None,
        server: str | None = None,
        registry: CollectorRegistry | None = None,
    ) -> EdgeLink:
        link = EdgeLink(
            EdgeHubSettings(
                server=server or f"127.0.0.1:{self.cloud.port}",
                node_name=node,
                heartbeat=HEARTBEAT,
                handshake_timeout=5.0,
                backoff=FAST_BACKOFF,
            ),
            recorder or EdgeRecorder(),
            database=self.directory / f"{node}.db",
            ssl_context=context or self.cloud.pki.client_context(node),
            registry=registry,
            ack_timeout=ACK_TIMEOUT,
            window=8,
        )
        await link.start()
        self.running.append(link)
        return link

    async def stop(self, link: EdgeLink) -> None:
        await link.stop()
        self.running.remove(link)

    async def stop_all(self) -> None:
        for link in list(self.running):
            await self.stop(link)


@pytest.fixture
def pki() -> LinkPki:
    return LinkPki.create()


@pytest.fixture
async def cloud(pki: LinkPki) -> AsyncIterator[Cloud]:
    running = Cloud(pki, free_port())
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def edges(cloud: Cloud, tmp_path: Path) -> AsyncIterator[Edges]:
    factory = Edges(cloud, tmp_path)
    try:
        yield factory
    finally:
        await factory.stop_all()


async def raw_session(
    cloud: Cloud, node: str, *, headers: dict[str, str] | None = None, cert_node: str | None = None
) -> ClientConnection:
    """A bare websocket client (no keepalives, no pings), to send the cloud whatever a test needs."""
    return await connect(
        cloud.url(node),
        ssl=cloud.pki.client_context(cert_node or node)(),
        additional_headers=headers if headers is not None else {"node_id": node, "project_id": "project"},
        proxy=None,
        compression=None,
        ping_interval=None,
    )


def update(content: object, resource: str = "default/device/d1") -> Message:
    return Message.new(
        source="twin", group=Group.TWIN, operation=Operation.UPDATE, resource=resource, content=content
    )


async def test_an_edge_with_its_node_certificate_connects_and_keeps_alive(cloud: Cloud, edges: Edges) -> None:
    edge = await edges.start("node-a")

    await wait_for(lambda: cloud.recorder.keepalives["node-a"] >= 2, what="keepalives of node-a")
    assert edge.connected
    assert edge.last_error is None
    assert cloud.running.connected_nodes() == {"node-a"}
    assert cloud.recorder.events == [("connected", "node-a")]
    assert cloud.metric("cloudsync_connected_nodes") == 1
    assert cloud.metric("cloudsync_keepalives_total", side="cloud") >= 2


async def test_a_session_with_keepalives_outlives_the_keepalive_timeout(cloud: Cloud, edges: Edges) -> None:
    await edges.start("node-a")

    # Keepalives every 0.2 s for well over the 1 s timeout: the session stays the same one.
    await wait_for(lambda: cloud.recorder.keepalives["node-a"] >= 10, timeout=10)
    assert cloud.recorder.events == [("connected", "node-a")]


async def test_a_silent_session_is_dropped_after_the_keepalive_timeout(cloud: Cloud) -> None:
    session = await raw_session(cloud, "node-a")
    await wait_for(lambda: cloud.running.connected_nodes() == {"node-a"})

    await wait_for(lambda: ("disconnected", "node-a") in cloud.recorder.events, timeout=5)
    assert cloud.running.connected_nodes() == frozenset()
    with pytest.raises(ConnectionClosed) as closed:
        await session.recv()
    assert "no keepalive for 1s" in str(closed.value)


@pytest.mark.parametrize(
    ("path_node", "cert_node", "headers", "status", "reason"),
    [
        ("node-b", "node-a", None, 403, "certificate is for node node-a, not node-b"),
        ("node-a", "node-a", {"node_id": "node-b", "project_id": "project"}, 400, "header node_id='node-b'"),
        ("node-a", "node-a", {"project_id": "project"}, 400, "header node_id is missing"),
    ],
    ids=["certificate-of-another-node", "header-of-another-node", "no-node-header"],
)
async def test_a_handshake_that_does_not_match_the_certificate_is_refused(
    cloud: Cloud, path_node: str, cert_node: str, headers: dict[str, str] | None, status: int, reason: str
) -> None:
    if headers is None:
        headers = {"node_id": path_node, "project_id": "project"}
    with pytest.raises(InvalidStatus) as refused:
        await raw_session(cloud, path_node, headers=headers, cert_node=cert_node)

    assert refused.value.response.status_code == status
    assert reason in refused.value.response.body.decode()
    assert cloud.running.connected_nodes() == frozenset()
    assert cloud.recorder.events == []


async def test_an_edge_with_the_certificate_of_another_node_gets_a_clear_error(
    cloud: Cloud, edges: Edges
) -> None:
    edge = await edges.start("node-b", context=cloud.pki.client_context("node-a"))

    error = await wait_for(lambda: edge.last_error, what="the edge's last error")
    assert isinstance(error, LinkRefusedError)
    assert error.status == 403
    assert error.reason == "certificate is for node node-a, not node-b"
    assert not edge.connected
    await wait_for(lambda: cloud.metric("cloudsync_connections_refused_total", reason="wrong_node") >= 2)


async def test_an_edge_without_a_client_certificate_is_refused(cloud: Cloud, edges: Edges) -> None:
    edge = await edges.start("node-a", context=cloud.pki.client_context(None))

    error = await wait_for(lambda: edge.last_error, what="the edge's last error")
    assert isinstance(error, LinkRefusedError)
    assert (error.status, error.reason) == (401, "client certificate required")
    assert cloud.recorder.events == []


async def test_an_edge_with_a_certificate_of_another_ca_fails_the_tls_handshake(
    cloud: Cloud, edges: Edges
) -> None:
    stranger = CertificateAuthority.create("another-cluster")
    edge = await edges.start("node-a", context=cloud.pki.client_context("node-a", issuer=stranger))

    error = await wait_for(lambda: edge.last_error, what="the edge's last error")
    assert isinstance(error, LinkConnectionError)
    assert "TLS handshake failed" in error.reason
    assert "client certificate issued by the cloud's CA" in error.reason
    assert cloud.recorder.events == []


async def test_a_refused_edge_connects_once_its_certificate_is_fixed(cloud: Cloud, edges: Edges) -> None:
    """The TLS context is built on every connect: a rotated certificate takes effect without a restart."""
    contexts = {"current": cloud.pki.client_context("node-x")}
    edge = await edges.start("node-a", context=lambda: contexts["current"]())
    await wait_for(lambda: isinstance(edge.last_error, LinkRefusedError))

    contexts["current"] = cloud.pki.client_context("node-a")

    await wait_for(lambda: edge.connected, what="reconnect with the new certificate")
    assert cloud.running.connected_nodes() == {"node-a"}


async def test_the_edge_reconnects_after_cloudhub_restarts(cloud: Cloud, edges: Edges) -> None:
    recorder = EdgeRecorder()
    edge = await edges.start("node-a", recorder=recorder)
    await wait_for(lambda: edge.connected)

    await cloud.stop()
    await wait_for(lambda: not edge.connected, what="the edge notices the cloud is gone")
    assert isinstance(edge.last_error, LinkConnectionError)
    await cloud.start()

    await wait_for(lambda: edge.connected, timeout=5, what="reconnect")
    assert recorder.connects == 2
    assert recorder.disconnects == 1
    assert cloud.running.connected_nodes() == {"node-a"}


async def test_a_new_connection_of_a_node_replaces_its_old_session(cloud: Cloud) -> None:
    first = await raw_session(cloud, "node-a")
    await wait_for(lambda: cloud.recorder.events == [("connected", "node-a")])

    second = await raw_session(cloud, "node-a")

    with pytest.raises(ConnectionClosed) as closed:
        await first.recv()
    assert "replaced by a newer connection" in str(closed.value)
    await wait_for(lambda: cloud.recorder.events.count(("connected", "node-a")) == 2)
    assert ("disconnected", "node-a") not in cloud.recorder.events
    assert cloud.running.connected_nodes() == {"node-a"}
    await second.close()
    await wait_for(lambda: cloud.recorder.events[-1] == ("disconnected", "node-a"))


async def test_malformed_frames_are_counted_and_dropped_and_the_session_goes_on(cloud: Cloud) -> None:
    session = await raw_session(cloud, "node-a")
    bad_frames: list[str | bytes] = [
        "not json",
        b"\xff\xfe binary",
        json.dumps({"header": {"msg_id": "1"}}),
        json.dumps({"header": {"msg_id": "", "timestamp": 1}, "route": {}, "content": None}),
        json.dumps([1, 2, 3]),
    ]
    for frame in bad_frames:
        await session.send(frame)
    good = update({"n": 1})
    await session.send(encode(good))

    await wait_for(lambda: cloud.recorder.contents("node-a") == [{"n": 1}])
    assert cloud.metric("cloudsync_frames_invalid_total", side="cloud") == len(bad_frames)
    # The valid message was acknowledged on the same session.
    ack = Message.model_validate_json(await session.recv())
    assert (ack.operation, ack.header.parent_msg_id, ack.route.source) == (
        Operation.RESPONSE,
        good.msg_id,
        "cloudhub",
    )
    assert cloud.running.connected_nodes() == {"node-a"}
    await session.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "msg_id": st.text(max_size=4) | json_values,
        "parent_msg_id": st.text(max_size=4) | json_values,
        "timestamp": st.integers() | json_values,
        "resourceversion": st.text(max_size=4) | json_values,
        "sync": json_values,
    },
)
routes = st.fixed_dictionaries(
    {},
    optional={
        "source": st.sampled_from(["edgehub", "twin", ""]) | json_values,
        "group": st.sampled_from(["resource", "twin"]) | json_values,
        "operation": st.sampled_from([op.value for op in Operation] + ["bogus"]) | json_values,
        "resource": st.sampled_from(["node", "default/device/d1", ""]) | json_values,
    },
)
frames = (
    st.fixed_dictionaries(
        {}, optional={"header": headers | json_values, "route": routes, "content": json_values}
    ).map(json.dumps)
    | st.text(max_size=64)
    | st.binary(max_size=64)
)


@settings(
    max_examples=80,
    deadline=None,
    # One live session across the examples, as a misbehaving node would keep sending.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=st.lists(frames, min_size=1, max_size=5))
async def test_random_frames_never_break_a_session_or_the_hub(cloud: Cloud, batch: list[str | bytes]) -> None:
    session = await raw_session(cloud, "fuzz")
    try:
        for frame in batch:
            await session.send(frame)
        probe = update({"probe": True}, resource="default/device/probe")
        await session.send(encode(probe))
        # The frames before the probe were handled (or dropped) in order: the probe is acknowledged.
        while True:
            answer = Message.model_validate_json(await session.recv())
            if answer.header.parent_msg_id == probe.msg_id:
                break
    finally:
        await session.close()
    # The hub keeps serving other nodes.
    other = await raw_session(cloud, "other")
    await other.send(encode(keepalive()))
    await wait_for(lambda: cloud.recorder.keepalives["other"] >= 1)
    await other.close()
