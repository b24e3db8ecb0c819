"""The OPC-UA protocol plugin of the mapper SDK: one asyncua session per device.

After each connect the properties' nodes are resolved (:mod:`mappers.opcua.nodes`), then the SDK asks the
driver to subscribe: one subscription per device, publishing at the shortest ``collectCycle`` of its
properties, one monitored item per node sampled at its property's cycle. Data changes are pushed to the SDK
as they arrive. A server that refuses subscriptions (or a monitored item) is polled instead, with one Read
request for all the due properties. Writes use the variant type the node's DataType declares; a refused
write (BadNotWritable, BadTypeMismatch, BadUserAccessDenied, BadOutOfRange) is a per-property error the SDK
answers on the twin's result topic.

A lost connection ends the session (the SDK reconnects with backoff and the driver subscribes again); the
notifications of an old session never reach the SDK after that, so no value from before the loss is
reported as new.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState
from asyncua.common.node import Node
from asyncua.common.subscription import DataChangeNotif, Subscription
from asyncua.observer import Observer

from device_models import OpcUaProtocolConfig, OpcUaVisitorConfig
from mappers.opcua.certificates import (
    ClientCertificate,
    default_cert_dir,
    ensure_client_certificate,
    user_certificate,
)
from mappers.opcua.codec import decode, encode
from mappers.opcua.errors import (
    OpcUaStatusError,
    ValueDecodeError,
    WriteRefusedError,
)
from mappers.opcua.nodes import NodeInfo, NodeResolver
from mappers.opcua.session import CONNECTION_ERRORS, SessionOptions, open_session
from mappers.sdk import (
    DeviceConfig,
    DeviceResponseError,
    DeviceUnreachableError,
    DeviceValue,
    MapperConfigError,
    PropertyConfig,
    PropertyError,
    PushReceiver,
    Reading,
    RequestRecorder,
    ValueEncodeError,
    ValueRefusedError,
)

log = logging.getLogger(__name__)

PROTOCOL_NAME = "opcua"
_WRITE_HINTS = {
    ua.StatusCodes.BadNotWritable: "the node is not writable (make the property ReadOnly in its DeviceModel)",
    ua.StatusCodes.BadUserAccessDenied: "the session's user may not write this node",
    ua.StatusCodes.BadTypeMismatch: "the node does not take a value of this type",
    ua.StatusCodes.BadOutOfRange: "the value is outside the range the node accepts",
    ua.StatusCodes.BadWriteNotSupported: "the node does not support this kind of write",
}


@dataclass(frozen=True)
class OpcUaSettings:
    """How the mapper talks to every OPC-UA device."""

    cert_dir: Path | None = None
    """Where the mapper keeps its own client certificate (made on first use), for devices that name none;
    ``None``: :func:`~mappers.opcua.default_cert_dir`."""
    timeout: float = 5.0
    """Seconds to wait for each answer, for devices without ``timeout``."""
    keepalive: float = 5.0
    """Seconds between two checks that an idle session is alive."""
    subscribe: bool = True
    """Use subscriptions where the server supports them; ``False`` polls every property."""


class _Requests(Observer):  # type: ignore[misc]  # asyncua is checked as untyped
    """asyncua's request observer: counts every service call, times those that are requests to the device."""

    def __init__(self, record: RequestRecorder, counts: Counter[str]) -> None:
        self._record = record
        self._counts = counts

    def on_request(self, request_type: str, duration: float, error: BaseException | None) -> None:
        self._counts[request_type] += 1
        # A Publish request waits on the server until there is news: its duration is no device latency.
        if request_type != "PublishRequest":
            self._record(duration)


class _Notifications:
    """asyncua's subscription handler for one session: data changes become pushed readings."""

    def __init__(
        self, driver: OpcUaDriver, receiver: PushReceiver, watched: dict[ua.NodeId, tuple[str, ...]]
    ) -> None:
        self.receiver = receiver
        self.closed = False
        self._driver = driver
        self._watched = watched

    def datachange_notification(self, node: Node, val: Any, data: DataChangeNotif) -> None:
        names = self._watched.get(node.nodeid)
        if self.closed or not names:
            return
        value = data.monitored_item.Value
        self.receiver.changed({name: self._driver.reading(name, value) for name in names})

    def status_change_notification(self, status: ua.StatusChangeNotification) -> None:
        if not self.closed and status.Status.is_bad():
            self.receiver.lost(
                DeviceUnreachableError(
                    self._driver.device, f"the server ended the subscription ({status.Status.name})"
                )
            )


class OpcUaDriver:
    """Drives one OPC-UA device (one session with its server)."""

    def __init__(
        self,
        device: DeviceConfig,
        config: OpcUaProtocolConfig,
        protocol: OpcUaProtocol,
        record_request: RequestRecorder,
    ) -> None:
        self.device = device.id
        self._config = config
        self._properties = device.properties
        self._settings = protocol.settings
        self._options = SessionOptions(
            certificate=protocol.certificate,
            timeout=protocol.settings.timeout,
            keepalive=protocol.settings.keepalive,
            observer=_Requests(record_request, protocol.service_calls),
            lost=self._connection_lost,
        )
        self._resolver = NodeResolver()
        self._client: Client | None = None
        self._nodes: dict[str, NodeInfo] = {}
        self._notifications: _Notifications | None = None
        self._subscription_refused: str | None = None

    async def connect(self) -> None:
        """Open a session and resolve the properties' nodes."""
        self._client = await open_session(self.device, self._config, self._options)
        try:
            self._nodes = await self._resolver.resolve(self._client, self._properties)
        except CONNECTION_ERRORS as exc:
            raise self._unreachable(exc) from exc

    async def close(self) -> None:
        """Close the session (if the server is still there to hear it); idempotent, never raises."""
        if self._notifications is not None:
            self._notifications.closed = True
            self._notifications = None
        client, self._client = self._client, None
        if client is None:
            return
        try:
            # Twice the request timeout: CloseSession and CloseSecureChannel may each take one.
            async with asyncio.timeout(2 * (self._config.timeout or self._settings.timeout)):
                # Also stops asyncua's own tasks (keepalive, publishing) when the connection is already lost.
                await client.disconnect()
        except CONNECTION_ERRORS:
            client.disconnect_socket()  # a server that does not answer: drop the connection all the same

    async def subscribe(
        self, properties: Sequence[PropertyConfig], receiver: PushReceiver
    ) -> Sequence[PropertyConfig]:
        """One subscription for ``properties``; returns those to poll (no node, or refused by the server)."""
        client = self._session()
        nodes = {
            prop.name: info.node for prop in properties if (info := self._nodes.get(prop.name)) and info.node
        }
        if not self._settings.subscribe or not nodes:
            return properties
        # One monitored item per node, sampled at the shortest cycle of the properties on it; one request
        # creates the items of each sampling interval.
        by_node: dict[ua.NodeId, tuple[Node, list[PropertyConfig]]] = {}
        for prop in properties:
            if (node := nodes.get(prop.name)) is not None:
                by_node.setdefault(node.nodeid, (node, []))[1].append(prop)
        by_sampling: dict[float, list[tuple[Node, list[PropertyConfig]]]] = {}
        for node, props in by_node.values():
            by_sampling.setdefault(min(prop.collect_cycle for prop in props), []).append((node, props))
        watched = {node_id: tuple(prop.name for prop in props) for node_id, (_node, props) in by_node.items()}
        notifications = _Notifications(self, receiver, watched)
        try:
            subscription = await client.create_subscription(min(by_sampling) * 1000, notifications)
            self._notifications = notifications
            refused = await self._monitor(subscription, by_sampling)
        except ua.UaStatusCodeError as exc:
            self._polling_instead(ua.StatusCode(exc.code).name)
            if self._notifications is not None:  # created, then refused monitored items: poll instead
                self._notifications.closed = True
                self._notifications = None
                with contextlib.suppress(*CONNECTION_ERRORS):
                    await subscription.delete()
            return properties
        except CONNECTION_ERRORS as exc:
            raise self._unreachable(exc) from exc
        return [prop for prop in properties if prop.name not in nodes or prop.name in refused]

    async def _monitor(
        self, subscription: Subscription, by_sampling: dict[float, list[tuple[Node, list[PropertyConfig]]]]
    ) -> set[str]:
        """Create the monitored items, one request per sampling interval; returns the properties refused."""
        refused: set[str] = set()
        for sampling, items in by_sampling.items():
            handles = await subscription.subscribe_data_change(
                [node for node, _props in items], sampling_interval=sampling * 1000
            )
            for (_node, props), handle in zip(items, handles, strict=True):
                if isinstance(handle, ua.StatusCode):
                    names = [prop.name for prop in props]
                    refused.update(names)
                    log.warning(
                        "cannot monitor %s (%s): polling",
                        ", ".join(names),
                        handle.name,
                        extra={"device": self.device},
                    )
        return refused

    def _polling_instead(self, status: str) -> None:
        if self._subscription_refused != status:
            self._subscription_refused = status
            log.warning(
                "the server refused a subscription (%s): polling", status, extra={"device": self.device}
            )

    async def read_many(self, properties: Sequence[PropertyConfig]) -> Mapping[str, Reading]:
        """Read ``properties`` with one Read request."""
        client = self._session()
        readings: dict[str, Reading] = {}
        names: list[str] = []
        nodes: list[Node] = []
        for prop in properties:
            info = self._nodes.get(prop.name)
            if info is None or info.node is None:
                readings[prop.name] = self._unresolved(prop.name, info)
            else:
                names.append(prop.name)
                nodes.append(info.node)
        if nodes:
            try:
                values = await client.read_attributes(nodes)
            except CONNECTION_ERRORS as exc:
                raise self._unreachable(exc) from exc
            readings.update(
                (name, self.reading(name, value)) for name, value in zip(names, values, strict=True)
            )
        return readings

    def reading(self, name: str, value: ua.DataValue) -> Reading:
        """A property's reading from a node's data value (read, or notified)."""
        status = value.StatusCode
        if status is not None and status.is_bad():
            return OpcUaStatusError(self.device, name, status.name, status.value)
        if value.Value is None:
            return PropertyError(self.device, name, "the server sent no value")
        try:
            return decode(value.Value)
        except ValueDecodeError as exc:
            return PropertyError(self.device, name, f"node {self._nodes[name].label} {exc.reason}")

    async def write_one(self, prop: PropertyConfig, value: DeviceValue) -> None:
        """Write ``value`` as the variant type the node declares."""
        client = self._session()
        info = self._nodes.get(prop.name)
        if info is None or info.node is None:
            raise self._unresolved(prop.name, info)
        if info.array:
            raise ValueRefusedError(self.device, prop.name, value, f"node {info.label} holds an array")
        if info.variant_type is None:
            raise ValueRefusedError(
                self.device, prop.name, value, f"node {info.label} has a data type of its own"
            )
        try:
            variant = encode(value, info.variant_type)
        except ValueEncodeError as exc:
            raise ValueRefusedError(self.device, prop.name, value, exc.reason) from exc
        try:
            (status,) = await client.write_values(
                [info.node], [ua.DataValue(variant)], raise_on_partial_error=False
            )
        except ua.UaStatusCodeError as exc:
            status = ua.StatusCode(exc.code)
        except CONNECTION_ERRORS as exc:
            raise self._unreachable(exc) from exc
        if status.is_bad():
            hint = _WRITE_HINTS.get(status.value)
            if hint is not None:
                raise WriteRefusedError(self.device, prop.name, value, status.name, status.value, hint)
            raise OpcUaStatusError(self.device, prop.name, status.name, status.value, what="write")

    def _session(self) -> Client:
        client = self._client
        if client is None or client.state is not UaClientState.CONNECTED:
            raise DeviceUnreachableError(self.device, f"no session with {self._config.url}")
        return client

    def _unresolved(self, name: str, info: NodeInfo | None) -> PropertyError:
        # The server answered that the node (or its browse path) does not exist: as a device error would.
        problem = info.problem if info and info.problem else "its node is unknown"
        return DeviceResponseError(self.device, name, problem)

    def _unreachable(self, error: BaseException) -> DeviceUnreachableError:
        if isinstance(error, ua.UaStatusCodeError):
            reason = f"{self._config.url} answered {ua.StatusCode(error.code).name}"
        else:
            reason = f"connection to {self._config.url} lost: {error or type(error).__name__}"
        return DeviceUnreachableError(self.device, reason)

    async def _connection_lost(self, error: Exception) -> None:
        if self._notifications is not None:
            self._notifications.receiver.lost(self._unreachable(error))


def _visitor_check(device: DeviceConfig) -> None:
    for prop in device.properties:
        if not isinstance(prop.visitor, OpcUaVisitorConfig):
            where = f"spec.properties[name={prop.name}].visitors.configData"
            raise MapperConfigError(device.id, where, prop.visitor, "is not an OPC-UA visitor")


class OpcUaProtocol:
    """The ``opcua`` protocol: builds drivers, owns the mapper's client certificate, counts service calls."""

    def __init__(self, settings: OpcUaSettings | None = None) -> None:
        self.settings = settings or OpcUaSettings()
        self.service_calls: Counter[str] = Counter()
        """Requests sent to all servers, by type (ReadRequest, PublishRequest, ...), for diagnostics."""
        self._own: ClientCertificate | None = None
        self._own_lock = asyncio.Lock()

    @property
    def name(self) -> str:
        """``protocolName`` of the devices this plugin drives."""
        return PROTOCOL_NAME

    def create_driver(self, device: DeviceConfig, record_request: RequestRecorder) -> OpcUaDriver:
        """A driver for ``device``; raises :class:`MapperConfigError` naming the field to fix."""
        config = device.protocol
        if not isinstance(config, OpcUaProtocolConfig):
            raise MapperConfigError(
                device.id, "spec.protocol.protocolName", type(config).__name__, "is not opcua"
            )
        _visitor_check(device)
        return OpcUaDriver(device, config, self, record_request)

    async def certificate(self, config: OpcUaProtocolConfig) -> ClientCertificate:
        """The client certificate for a device: the one its configData names, else the mapper's own."""
        if config.certificate and config.private_key:
            return await asyncio.to_thread(
                user_certificate, Path(config.certificate), Path(config.private_key)
            )
        async with self._own_lock:  # devices connecting together must not each make a certificate
            if self._own is None:
                cert_dir = self.settings.cert_dir or default_cert_dir()
                self._own = await asyncio.to_thread(ensure_client_certificate, cert_dir)
                log.info(
                    "client certificate %s (application URI %s)",
                    self._own.certificate,
                    self._own.application_uri,
                )
            return self._own
