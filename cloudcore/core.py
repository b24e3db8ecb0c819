"""The cloud daemon in one object: ``async with CloudCore(config, api) as cloud:``.

:class:`CloudCore` loads (or creates, on first start) the CA and the token key from Secrets, issues its own
serving certificate, and runs under a :class:`~supervision.Supervisor`: the certificate service (HTTPS,
10002), the cloud link (websocket + mutual TLS, 10000) and the controllers behind it (nodes, devices, pods).
:class:`CloudRouter` hands each edge message to the controller that owns its resource. ``edgetwin cloudcore``
runs it with signals and ``/healthz``; the demo and the tests run it in-process.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import kubernetes.client as k8s
from prometheus_client import CollectorRegistry, Counter

from cloudcore.config import CloudCoreConfig
from cloudcore.devices import DeviceController, is_device_resource
from cloudcore.edge import EdgeController, is_pod_resource
from cloudcore.errors import CloudCoreError
from cloudcore.kube import ensure_crd
from cloudcore.nodes import NodeController
from cloudcore.objectsync import ObjectSyncStore, install_objectsync_crd
from cloudcore.secrets import load_or_create_ca, load_or_create_token_key
from cloudcore.stream import CloudStream
from cloudcore.tokens import TokenPublisher
from cloudsync import (
    CertificateAuthority,
    CertServer,
    CloudHubSettings,
    CloudLink,
    Message,
    Operation,
    ResourceType,
    TokenAuthority,
    resource_type,
    server_ssl_context,
)
from device_models import ServeError
from device_models.crd import KINDS, crd_manifest
from supervision import Module, ModuleStatus, Supervisor

__all__ = ["CloudCore", "CloudRouter"]

log = logging.getLogger(__name__)

# The serving certificate always names these, so that edges and tools on the cloud machine itself connect.
_LOCAL_HOSTS = ("127.0.0.1", "localhost")
# Resource types the node controller owns (the node's own object, status and lease).
_NODE_TYPES = frozenset({ResourceType.NODE, ResourceType.NODE_STATUS, ResourceType.LEASE})


class CloudRouter:
    """The cloud link's handler: each edge message goes to the controller that owns its resource.

    Keepalives and ``<ns>/node|nodestatus|lease/<name>`` go to the node controller, ``device/...`` to the
    DeviceController, ``<ns>/pod|podstatus/<name>`` to the EdgeController; anything else is logged,
    counted and dropped (acknowledged, so the edge does not re-send what no controller will ever take).
    """

    def __init__(
        self,
        nodes: NodeController,
        devices: DeviceController | None,
        pods: EdgeController | None,
        *,
        registry: CollectorRegistry,
    ) -> None:
        self._nodes = nodes
        self._devices = devices
        self._pods = pods
        self._unrouted = Counter(
            "edgetwin_cloudcore_unrouted_messages",
            "Edge messages no cloudcore module takes, by operation",
            ["operation"],
            registry=registry,
        )

    async def node_connected(self, node: str) -> None:
        """A node's session opened."""
        await self._nodes.node_connected(node)

    async def node_disconnected(self, node: str) -> None:
        """A node's session closed."""
        await self._nodes.node_disconnected(node)

    async def received(self, node: str, message: Message) -> None:
        """Route one edge message; raising makes the link leave it unacknowledged (re-sent later)."""
        resource = message.resource
        if message.operation is Operation.KEEPALIVE or resource == "node":
            await self._nodes.received(node, message)
        elif self._devices is not None and is_device_resource(resource):
            await self._devices.received(node, message)
        elif self._pods is not None and is_pod_resource(resource):
            await self._pods.received(node, message)
        elif resource_type(resource) in _NODE_TYPES:
            await self._nodes.received(node, message)
        else:
            self._unrouted.labels(operation=message.operation.value).inc()
            log.warning(
                "edge message for no cloudcore module dropped",
                extra={"node": node, "resource": resource, "operation": message.operation.value},
            )


class _Modules:
    """What one start builds; rebuilt on the next start (the CA and serving certificate may change)."""

    def __init__(
        self, supervisor: Supervisor, link: CloudLink, certs: CertServer | None, stream: CloudStream | None
    ) -> None:
        self.supervisor = supervisor
        self.link = link
        self.certs = certs
        self.stream = stream


class CloudCore:
    """The cloud daemon: CA and tokens, certificate service, cloud link, node, device and pod controllers.

    ``api`` is the Kubernetes client (:func:`cloudcore.kube.load_api_client`); ``ca`` an existing CA to use
    instead of the one kept in the ``casecret`` Secret (it replaces a different stored one). Ports 0 in the
    config pick free ports (see :attr:`websocket_port` / :attr:`https_port`).
    """

    def __init__(
        self,
        config: CloudCoreConfig,
        api: k8s.ApiClient,
        *,
        registry: CollectorRegistry | None = None,
        ca: CertificateAuthority | None = None,
    ) -> None:
        self.config = config
        self.api = api
        self.registry = registry if registry is not None else CollectorRegistry()
        self._supplied_ca = ca
        self._ca: CertificateAuthority | None = None
        self._tokens: TokenAuthority | None = None
        settings = config.edgetwin
        hub = config.modules.cloud_hub
        self.nodes = NodeController(
            api,
            grace_period=settings.node_grace_period,
            lease_duration=settings.node_lease_duration,
            status_interval=float(config.modules.edge_controller.node_update_frequency),
            registry=self.registry,
            kubelet_port=lambda: self.stream.stream_port if self.stream is not None else None,
        )
        self.devices = (
            DeviceController(api, self._send, registry=self.registry)
            if config.modules.device_controller.enable
            else None
        )
        self.pods = (
            EdgeController(api, self._send, registry=self.registry)
            if config.modules.edge_controller.enable
            else None
        )
        self.router = CloudRouter(self.nodes, self.devices, self.pods, registry=self.registry)
        self.acks = ObjectSyncStore(api, namespace=settings.namespace, registry=self.registry)
        self._link_settings = CloudHubSettings(
            host=hub.websocket.address,
            port=hub.websocket.port,
            keepalive_timeout=float(hub.keepalive_interval),
        )
        self._modules: _Modules | None = None

    @property
    def ca(self) -> CertificateAuthority:
        """The cluster's CA (after :meth:`start`)."""
        if self._ca is None:
            raise CloudCoreError("cloudcore has not started: no CA loaded yet")
        return self._ca

    @property
    def link(self) -> CloudLink:
        """The cloud link (after :meth:`start`)."""
        return self._running().link

    @property
    def stream(self) -> CloudStream | None:
        """``kubectl logs`` / ``exec`` for edge pods (``modules.cloudStream``), while running and enabled."""
        return self._modules.stream if self._modules is not None else None

    @property
    def websocket_port(self) -> int:
        """The port edge nodes connect to (the configured one, or the one picked for port 0)."""
        return self._running().link.hub.port

    @property
    def https_port(self) -> int:
        """The certificate service's port."""
        certs = self._running().certs
        if certs is None:
            raise CloudCoreError("the certificate service is disabled (modules.cloudHub.https.enable)")
        return certs.port

    def token(self, ttl: timedelta = timedelta(hours=24)) -> str:
        """A join token (the CA's hash and a JWT valid for ``ttl``), as ``edgetwin gettoken`` prints it."""
        if self._tokens is None:
            raise CloudCoreError("cloudcore has not started: no token key loaded yet")
        return self._tokens.issue(ttl)

    @property
    def statuses(self) -> list[ModuleStatus]:
        """Each module's state, restarts and last error, in start order."""
        return self._modules.supervisor.statuses if self._modules is not None else []

    @property
    def healthy(self) -> bool:
        """True when every module runs."""
        return self._modules is not None and self._modules.supervisor.healthy

    def health_detail(self) -> dict[str, Any]:
        """What ``/healthz`` shows: connected nodes and every module's status."""
        connected = sorted(self._modules.link.connected_nodes()) if self._modules is not None else []
        return {
            "connected_nodes": connected,
            "modules": {status.name: status.as_dict() for status in self.statuses},
        }

    async def start(self) -> None:
        """Install the CRDs (unless turned off), load or create the CA and token key, start every module."""
        if self.config.edgetwin.install_crds:
            await self._install_crds()
        namespace = self.config.edgetwin.namespace
        supplied = self._supplied_ca or await asyncio.to_thread(_ca_from_files, self.config)
        self._ca = await load_or_create_ca(self.api, namespace, supplied=supplied)
        key = await load_or_create_token_key(self.api, namespace)
        self._tokens = TokenAuthority(key, self._ca.hash())
        self._modules = self._build(self._ca, self._tokens)
        await self._modules.supervisor.start()
        log.info(
            "cloudcore running",
            extra={"websocket_port": self.websocket_port, "ca_hash": self._ca.hash()},
        )

    async def _install_crds(self) -> None:
        await install_objectsync_crd(self.api)
        if self.devices is not None:
            for kind in KINDS:
                await ensure_crd(self.api, crd_manifest(kind))

    def _build(self, ca: CertificateAuthority, tokens: TokenAuthority) -> _Modules:
        hub = self.config.modules.cloud_hub
        hosts = [*hub.advertise_address, *hub.dns_names, *_LOCAL_HOSTS]
        cert_pem, key_pem = ca.issue_server_cert(list(dict.fromkeys(hosts)))
        link = CloudLink(
            self.router,
            self.acks,
            ssl_context=server_ssl_context(ca.cert_pem(), cert_pem, key_pem, require_client_cert=False),
            settings=self._link_settings,
            registry=self.registry,
        )
        modules: list[Module] = []
        certs = None
        if hub.https.enable:
            certs = CertServer(
                ca,
                tokens,
                host=hub.https.address,
                port=hub.https.port,
                server_cert_pem=cert_pem,
                server_key_pem=key_pem,
                registry=self.registry,
                cert_days=hub.edge_cert_signing_duration,
            )
            modules.append(certs)
        stream = None
        if self.config.modules.cloud_stream.enable:
            # Before the node controller: Nodes registered from then on carry the stream port.
            stream = CloudStream(
                self.api,
                self.config.modules.cloud_stream,
                host=hub.websocket.address,
                ca_pem=ca.cert_pem(),
                cert_pem=cert_pem,
                key_pem=key_pem,
                registry=self.registry,
            )
            modules.append(stream)
        refresh = timedelta(hours=hub.token_refresh_duration)
        modules.append(TokenPublisher(self.api, tokens, self.config.edgetwin.namespace, refresh=refresh))
        modules += [self.nodes, link]
        modules += [module for module in (self.devices, self.pods) if module is not None]
        supervisor = Supervisor(modules, registry=self.registry, fatal=(CloudCoreError, ServeError))
        return _Modules(supervisor, link, certs, stream)

    async def _send(self, node: str, message: Message) -> None:
        await self._running().link.send(node, message)

    def _running(self) -> _Modules:
        if self._modules is None:
            raise CloudCoreError("cloudcore has not started")
        return self._modules

    async def stop(self) -> None:
        """Stop the modules in reverse order."""
        if self._modules is not None:
            await self._modules.supervisor.stop()
        log.info("cloudcore stopped")

    async def run(self, stop: asyncio.Event) -> None:
        """Start, run until ``stop`` is set or a module fails for good, then stop."""
        await self.start()
        try:
            stopping = asyncio.create_task(stop.wait())
            failing = asyncio.create_task(self._running().supervisor.wait())
            done, pending = await asyncio.wait({stopping, failing}, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            if failing in done:
                failing.result()
        finally:
            await self.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


def _ca_from_files(config: CloudCoreConfig) -> CertificateAuthority | None:
    """An existing CA given by ``tlsCAFile`` + ``tlsCAKeyFile`` (both present), as KubeEdge accepts one."""
    hub = config.modules.cloud_hub
    cert, key = Path(hub.tls_ca_file), Path(hub.tls_ca_key_file)
    if not (cert.is_file() and key.is_file()):
        return None
    log.info("using the CA of tlsCAFile / tlsCAKeyFile", extra={"ca_file": str(cert)})
    return CertificateAuthority.from_pem(cert.read_bytes(), key.read_bytes())
