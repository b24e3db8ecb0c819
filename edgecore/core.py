"""The edge daemon in one object: ``async with EdgeCore(config, devices_dir=...) as core:``.

:class:`EdgeCore` builds the modules the configuration enables (the managed mosquitto in internal mode,
the EventBus connection, the DeviceTwin), runs them under a :class:`~supervision.Supervisor` and
offers the daemon's API: health, the twin, and the extra topics (``add_sub_topic`` / ``remove_sub_topic``).
``edgetwin edgecore`` and ``edgetwin demo`` both run it; the command adds signals and ``/healthz``.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from prometheus_client import CollectorRegistry

from cloudsync import (
    CertificateRotator,
    EdgeHubSettings,
    EdgeLink,
    Message,
    TunnelClient,
    TunnelClientSettings,
    client_ssl_context_from_files,
)
from device_models import ServeError, TwinValidationError
from devicetwin import CloudSink, DeviceTwin, TwinRequestError
from edgecore.cloud import DeviceSyncModule, EdgeRouter
from edgecore.config import EdgeCoreConfig, MqttMode
from edgecore.devices import load_devices
from edgecore.devicesync import LinkCloudSink
from edgecore.edged import Edged
from edgecore.errors import ConfigIssue, DevicesDirError, EdgeCoreConfigError, EdgeCoreError
from edgecore.metamanager import MetaManager
from edgecore.metaserver import MetaServer
from edgecore.modules import DeviceTwinModule, EventBusModule, MosquittoModule, UploadSink
from edgecore.nodeinfo import NodeInfo
from edgecore.stream import ContainerStreams
from edgecore.subtopics import SubTopicStore
from eventbus import BackoffPolicy, BrokerSettings, EventBusConfigError
from supervision import Module, ModuleStatus, Supervisor

__all__ = ["EdgeCore", "broker_settings"]

log = logging.getLogger(__name__)

# Errors a restart cannot cure: the process stops and says which setting or file to fix.
_FATAL: tuple[type[BaseException], ...] = (
    EdgeCoreConfigError,
    EventBusConfigError,
    DevicesDirError,
    TwinValidationError,
    TwinRequestError,
    ServeError,
)
# BrokerSettings' field names, as edgecore.yaml spells them.
_SETTINGS_FIELDS = {
    "url": "mqttServerExternal",
    "username": "mqttUsername",
    "password": "mqttPassword",
    "max_inflight": "mqttSessionQueueSize",
    "ca_file": "eventBusTLS.tlsMqttCAFile",
    "cert_file": "eventBusTLS.tlsMqttCertFile",
    "key_file": "eventBusTLS.tlsMqttPrivateKeyFile",
}


def broker_settings(config: EdgeCoreConfig) -> BrokerSettings:
    """How edgecore's MQTT connections reach the broker, from ``modules.eventBus``.

    ``eventBusTLS`` applies to the external broker (the internal one listens on loopback, in plain TCP).
    """
    bus = config.modules.event_bus
    tls = bus.event_bus_tls if bus.mqtt_mode is MqttMode.EXTERNAL and bus.event_bus_tls.enable else None
    url = bus.broker_url
    if tls is not None:
        url = "ssl://" + url.partition("://")[2]
    try:
        return BrokerSettings(
            url=url,
            username=bus.mqtt_username or None,
            password=bus.mqtt_password or None,
            ca_file=Path(tls.tls_mqtt_ca_file) if tls and tls.tls_mqtt_ca_file else None,
            cert_file=Path(tls.tls_mqtt_cert_file) if tls and tls.tls_mqtt_cert_file else None,
            key_file=Path(tls.tls_mqtt_private_key_file) if tls and tls.tls_mqtt_private_key_file else None,
            max_inflight=bus.mqtt_session_queue_size,
        )
    except EventBusConfigError as exc:
        field = f"modules.eventBus.{_SETTINGS_FIELDS.get(exc.field, exc.field)}"
        raise EdgeCoreConfigError("", [ConfigIssue(field, exc.value, exc.reason)]) from exc


class EdgeCore:
    """The edge daemon: supervised modules, their health, the twin and the extra MQTT topics.

    ``registry`` receives every metric (twin, MQTT clients, restarts): one EdgeCore per registry. An
    EdgeCore may be started again after :meth:`stop`. ``cloud`` and ``uploads`` are the cloud link once
    there is one (without it the edge works alone and counts what it would send).
    """

    def __init__(
        self,
        config: EdgeCoreConfig,
        *,
        devices_dir: Path | None = None,
        registry: CollectorRegistry | None = None,
        cloud: CloudSink | None = None,
        uploads: UploadSink | None = None,
    ) -> None:
        self.config = config
        self.devices_dir = devices_dir
        self.registry = registry if registry is not None else CollectorRegistry()
        self._settings = broker_settings(config)
        self._cloud = cloud
        self._uploads = uploads
        self._sub_topics = SubTopicStore(config.database.path)
        self._mosquitto: MosquittoModule | None = None
        self._eventbus: EventBusModule | None = None
        self._twin_module: DeviceTwinModule | None = None
        self.meta: MetaManager | None = None
        """The edge's object store (``modules.metaManager``), when enabled."""
        self.link: EdgeLink | None = None
        """The link to cloudcore (``modules.edgeHub``), when enabled."""
        self._router: EdgeRouter | None = None
        self.edged: Edged | None = None
        """The pod runner (``modules.edged``), when enabled."""
        if config.modules.meta_manager.enable:
            self.meta = MetaManager(config.database.path, registry=self.registry)
        if config.modules.edge_hub.enable:
            self._router = EdgeRouter(
                NodeInfo.from_config(config),
                registry=self.registry,
                meta=self.meta,
                on_connected=self._cloud_connected,
            )
            self.link = _edge_link(config, self._router, self.registry)
            self._router.link = self.link
            if self._cloud is None:
                self._cloud = LinkCloudSink(self.link)
        backoff = config.edgetwin.restart_backoff
        self._supervisor = Supervisor(
            self._modules(),
            registry=self.registry,
            backoff=BackoffPolicy(minimum=backoff.initial, maximum=backoff.max),
            fatal=_FATAL,
        )

    @property
    def node_name(self) -> str:
        """This edge node's name."""
        return self.config.node_name

    @property
    def broker_url(self) -> str:
        """The MQTT broker apps and mappers use with this edge."""
        return self._settings.url

    @property
    def broker_pid(self) -> int | None:
        """The managed mosquitto's process id (internal mode, while it runs)."""
        return self._mosquitto.pid if self._mosquitto is not None else None

    @property
    def twin(self) -> DeviceTwin:
        """The running DeviceTwin; raises :class:`EdgeCoreError` while it is not running."""
        twin = self._twin_module.twin if self._twin_module is not None else None
        if twin is None:
            raise EdgeCoreError("the device twin is not running")
        return twin

    @property
    def statuses(self) -> list[ModuleStatus]:
        """Each module's state, restarts and last error, in start order."""
        return self._supervisor.statuses

    @property
    def healthy(self) -> bool:
        """True when every module runs."""
        return self._supervisor.healthy

    def health_detail(self) -> dict[str, Any]:
        """What ``/healthz`` shows: the node, the broker and every module's status."""
        return {
            "node": self.node_name,
            "broker": self.broker_url,
            "modules": {status.name: status.as_dict() for status in self.statuses},
        }

    async def start(self) -> None:
        """Load the devices directory, open the database, and start the modules in order.

        Returns once every module runs (each retried with backoff until it does). A bad devices file or
        setting raises at once (:class:`DevicesDirError`, :class:`~supervision.ModuleFailedError`).
        """
        if self.link is not None:
            _check_credentials(self.config)
        if self.devices_dir is not None and self._twin_module is not None:
            self._twin_module.devices = await asyncio.to_thread(
                load_devices, self.devices_dir, self.node_name
            )
        await self._sub_topics.open()
        try:
            await self._supervisor.start()
        except BaseException:
            await self._sub_topics.close()
            raise
        log.info("edgecore running", extra={"broker": self.broker_url})

    def _modules(self) -> list[Module]:
        bus = self.config.modules.event_bus
        modules: list[Module] = []
        if bus.enable and bus.mqtt_mode is MqttMode.INTERNAL:
            users = {bus.mqtt_username: bus.mqtt_password} if bus.mqtt_username else None
            database = self.config.database.path
            self._mosquitto = MosquittoModule(
                bus.mqtt_server_internal,
                workdir=database.with_name(f"{database.stem}-mosquitto"),
                users=users,
            )
            modules.append(self._mosquitto)
        if bus.enable:
            self._eventbus = EventBusModule(
                self._settings,
                self._sub_topics,
                qos=bus.mqtt_qos,
                client_id=bus.mqtt_sub_client_id or None,
                registry=self.registry,
                uploads=self._uploads,
            )
            modules.append(self._eventbus)
        if self.config.modules.device_twin.enable:
            self._twin_module = DeviceTwinModule(
                self.config.database.path,
                self._settings,
                self.node_name,
                client_id=bus.mqtt_pub_client_id or None,
                registry=self.registry,
                cloud=self._cloud,
            )
            modules.append(self._twin_module)
        if self.meta is not None:
            modules.append(self.meta)
            server = self.config.modules.meta_manager.meta_server
            if server.enable:
                modules.append(MetaServer(self.meta, server.server, registry=self.registry))
            edged = self.config.modules.edged
            if edged.enable:
                self.edged = Edged(
                    self.meta,
                    edged.tailored_kubelet_config.container_runtime_endpoint,
                    self.node_name,
                    root_dir=Path(edged.root_directory),
                    report=self._report_pod,
                    registry=self.registry,
                    node_ip=edged.node_ip or "127.0.0.1",
                    cgroup_parent=edged.tailored_kubelet_config.cgroup_root,
                )
                modules.append(self.edged)
        hub = self.config.modules.edge_hub
        if self.link is not None and self._router is not None:
            if self._twin_module is not None:
                devices = DeviceSyncModule(
                    self.config.database.path, lambda: self.twin, self.link, registry=self.registry
                )
                self._router.devices = devices
                modules.append(devices)
            if hub.rotate_certificates:
                modules.append(
                    CertificateRotator(
                        hub.http_server.removeprefix("https://"),
                        Path(hub.tls_ca_file),
                        Path(hub.tls_cert_file),
                        Path(hub.tls_private_key_file),
                        self.node_name,
                        registry=self.registry,
                    )
                )
            modules.append(self.link)
        if self.config.modules.edge_stream.enable:
            modules.append(self._stream_tunnel())
        return modules

    def _stream_tunnel(self) -> TunnelClient:
        """``kubectl logs`` / ``exec`` through cloudcore's stream tunnel (``modules.edgeStream``)."""
        stream = self.config.modules.edge_stream
        settings = TunnelClientSettings(
            server=stream.server,
            node_name=self.node_name,
            handshake_timeout=float(stream.handshake_timeout),
            ping_interval=float(stream.read_deadline),
        )
        files = (
            Path(stream.tls_tunnel_ca_file),
            Path(stream.tls_tunnel_cert_file),
            Path(stream.tls_tunnel_private_key_file),
        )
        handler = ContainerStreams(self.edged.runtime if self.edged is not None else None, self.node_name)
        return TunnelClient(
            settings,
            # Called on every connect, so a rotated certificate is used without a restart.
            lambda: client_ssl_context_from_files(*files),
            handler,
            registry=self.registry,
        )

    async def stop(self) -> None:
        """Stop the modules in reverse order (the twin flushes its store) and close the database."""
        await self._supervisor.stop()
        await self._sub_topics.close()
        log.info("edgecore stopped")

    async def run(self, stop: asyncio.Event) -> None:
        """Start, run until ``stop`` is set, then stop; raises if a module fails for good meanwhile."""
        stopping = asyncio.create_task(stop.wait())
        starting = asyncio.create_task(self.start())
        try:
            await asyncio.wait({stopping, starting}, return_when=asyncio.FIRST_COMPLETED)
            if starting.done():
                starting.result()
                failing = asyncio.create_task(self._supervisor.wait())
                done, _ = await asyncio.wait({stopping, failing}, return_when=asyncio.FIRST_COMPLETED)
                if failing in done:
                    failing.result()  # raises the ModuleFailedError
                failing.cancel()
        finally:
            for task in (stopping, starting):
                task.cancel()
            # Whatever start() raised was raised above already; here it only has to be finished.
            await asyncio.gather(starting, return_exceptions=True)
            await self.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _report_pod(self, message: Message) -> None:
        """Edged's status reports go to the cloud; without a link they are only Edged's to keep."""
        if self.link is None:
            return
        await self.link.send(message)

    def _cloud_connected(self) -> None:
        if self.edged is not None:
            self.edged.report_all()

    async def sub_topics(self) -> list[str]:
        """The extra topics subscribed (stored in the ``sub_topics`` table)."""
        return await self._sub_topics.topics()

    async def add_sub_topic(self, topic: str) -> None:
        """Subscribe an extra topic now and at every start; messages on it go to the cloud as they are.

        Raises :class:`~edgecore.InvalidTopicError` for a topic filter MQTT does not allow.
        """
        if await self._sub_topics.add(topic) and self._eventbus is not None:
            await self._eventbus.subscribe(topic)
        log.info("extra topic subscribed", extra={"topic": topic})

    async def remove_sub_topic(self, topic: str) -> None:
        """Unsubscribe an extra topic and forget it."""
        if await self._sub_topics.remove(topic) and self._eventbus is not None:
            await self._eventbus.unsubscribe(topic)
        log.info("extra topic removed", extra={"topic": topic})


def _edge_link(config: EdgeCoreConfig, router: EdgeRouter, registry: CollectorRegistry) -> EdgeLink:
    hub = config.modules.edge_hub
    settings = EdgeHubSettings(
        server=hub.websocket.server,
        node_name=config.node_name,
        project_id=hub.project_id,
        heartbeat=float(hub.heartbeat),
        handshake_timeout=float(hub.websocket.handshake_timeout),
    )
    files = (Path(hub.tls_ca_file), Path(hub.tls_cert_file), Path(hub.tls_private_key_file))
    return EdgeLink(
        settings,
        router,
        database=config.database.path,
        # Called on every connect, so a rotated certificate is used without a restart.
        ssl_context=lambda: client_ssl_context_from_files(*files),
        registry=registry,
    )


def _check_credentials(config: EdgeCoreConfig) -> None:
    """The link cannot work without the files ``edgetwin join`` writes: say so before starting."""
    hub = config.modules.edge_hub
    issues = [
        ConfigIssue(f"modules.edgeHub.{field}", path, "file not found: run `edgetwin join` first")
        for field, path in (
            ("tlsCaFile", hub.tls_ca_file),
            ("tlsCertFile", hub.tls_cert_file),
            ("tlsPrivateKeyFile", hub.tls_private_key_file),
        )
        if not Path(path).is_file()
    ]
    if issues:
        raise EdgeCoreConfigError("", issues)
