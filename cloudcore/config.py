"""``cloudcore.yaml``: KubeEdge's ``cloudcore --config`` file (``cloudcore.config.kubeedge.io/v1alpha1``).

Field names and defaults are KubeEdge's (``pkg/apis/componentconfig/cloudcore/v1alpha1``), so a file written
for KubeEdge loads unchanged: fields edgetwin does not use are kept and listed in ONE warning. edgetwin's
own settings live in a top-level ``edgetwin`` section. Differences from KubeEdge, each for a reason:

- ``kubeAPIConfig.kubeConfig`` defaults to empty: ``$KUBECONFIG``, then the in-cluster service account,
  then ``~/.kube/config`` (KubeEdge: ``/root/.kube/config``). ``qps`` is not enforced (the Python client
  has no rate limiter: cloudcore's own writes are rate-limited where they are frequent) and ``burst``
  bounds the client's connection pool; edgetwin always speaks JSON (no ``contentType``).
- ``modules.cloudHub.advertiseAddress`` defaults to empty, meaning this machine's addresses.
- ``modules.cloudHub.quic.enable`` must stay false: edgetwin has no QUIC transport.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from cloudcore.errors import CloudCoreConfigError
from supervision.config import ConfigSection, dump_yaml, field_path, warn_unknown_fields

__all__ = [
    "API_VERSION",
    "KIND",
    "CloudCoreConfig",
    "CloudHubConfig",
    "CloudHubHTTPS",
    "CloudHubQUIC",
    "CloudHubWebSocket",
    "CloudModulesConfig",
    "CloudStreamConfig",
    "CloudcoreEdgetwinConfig",
    "DeviceControllerConfig",
    "EdgeControllerConfig",
    "KubeAPIConfig",
    "dump_config",
    "load_config",
    "parse_config",
]

log = logging.getLogger(__name__)

API_VERSION: Final = "cloudcore.config.kubeedge.io/v1alpha1"
KIND: Final = "CloudCore"

_HOST_PORT: Final = re.compile(r"^(\[[0-9a-fA-F:]+\]|[^/:\s\[\]]+):\d{1,5}$")
_DNS_LABEL: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class KubeAPIConfig(ConfigSection):
    """``kubeAPIConfig``: how cloudcore reaches the Kubernetes API (see the module notes)."""

    master: str = ""
    qps: int = Field(100, gt=0)
    burst: int = Field(200, gt=0)
    kube_config: str = ""


class CloudHubWebSocket(ConfigSection):
    """``modules.cloudHub.websocket``: the edge nodes' websocket endpoint (mutual TLS)."""

    enable: bool = True
    address: str = Field("0.0.0.0", min_length=1)  # KubeEdge's default: edge nodes connect from afar
    port: int = Field(10000, ge=1, le=65535)


class CloudHubQUIC(ConfigSection):
    """``modules.cloudHub.quic``: read for compatibility, must stay disabled."""

    enable: bool = False
    address: str = "0.0.0.0"  # KubeEdge's default
    port: int = Field(10001, ge=1, le=65535)
    max_incoming_streams: int = Field(10000, gt=0)

    @field_validator("enable")
    @classmethod
    def _disabled(cls, value: bool) -> bool:
        if value:
            raise ValueError("edgetwin has no QUIC transport: set it to false and use the websocket")
        return value


class CloudHubHTTPS(ConfigSection):
    """``modules.cloudHub.https``: the CA certificate and the node certificate signing endpoint."""

    enable: bool = True
    address: str = Field("0.0.0.0", min_length=1)  # KubeEdge's default
    port: int = Field(10002, ge=1, le=65535)


class CloudHubConfig(ConfigSection):
    """``modules.cloudHub``: the edge nodes' link, certificates and tokens.

    ``keepaliveInterval``: seconds a silent session is kept; ``edgeCertSigningDuration``: days a node
    certificate is valid; ``tokenRefreshDuration``: hours between refreshes of the ready-made join token in
    ``tokensecret`` (``tokendata``, as KubeEdge keeps it; each is valid for twice that).
    """

    enable: bool = True
    keepalive_interval: int = Field(30, gt=0)
    node_limit: int = Field(1000, gt=0)
    tls_ca_file: str = Field("/etc/kubeedge/ca/rootCA.crt", alias="tlsCAFile")
    tls_ca_key_file: str = Field("/etc/kubeedge/ca/rootCA.key", alias="tlsCAKeyFile")
    tls_cert_file: str = "/etc/kubeedge/certs/server.crt"
    tls_private_key_file: str = "/etc/kubeedge/certs/server.key"
    advertise_address: list[str] = Field(default_factory=list)
    dns_names: list[str] = Field(default_factory=list, alias="dnsNames")
    edge_cert_signing_duration: int = Field(365, gt=0)
    token_refresh_duration: int = Field(12, gt=0)
    websocket: CloudHubWebSocket = Field(default_factory=CloudHubWebSocket)
    quic: CloudHubQUIC = Field(default_factory=CloudHubQUIC)
    https: CloudHubHTTPS = Field(default_factory=CloudHubHTTPS)


class EdgeControllerConfig(ConfigSection):
    """``modules.edgeController``: ``nodeUpdateFrequency`` = seconds between Ready writes of a quiet node."""

    enable: bool = True
    node_update_frequency: int = Field(10, gt=0)


class DeviceControllerConfig(ConfigSection):
    """``modules.deviceController``: Device / DeviceModel CRDs to and from the edge nodes."""

    enable: bool = True


class CloudStreamConfig(ConfigSection):
    """``modules.cloudStream``: ``kubectl logs`` / ``exec`` for edge pods (see :mod:`cloudcore.stream`).

    ``streamPort``: the kubelet-style HTTPS API the apiserver calls (the Nodes' kubelet port);
    ``tunnelPort``: where edges open their tunnel. Both listen on ``modules.cloudHub.websocket.address``.
    ``tlsStreamCAFile``: the CA of the apiserver's kubelet client certificate
    (``--kubelet-client-certificate``), required from callers of the stream port; ``""`` requires none
    (anyone reaching the port may then read logs and exec: keep the port private). The tunnel and the
    stream port serve cloudcore's own certificate of the cluster CA, so ``tlsTunnel*`` and
    ``tlsStreamCertFile`` / ``tlsStreamPrivateKeyFile`` are read for compatibility and unused.
    """

    enable: bool = False
    stream_port: int = Field(10003, ge=0, le=65535)
    tunnel_port: int = Field(10004, ge=0, le=65535)
    tls_stream_ca_file: str = Field("/etc/kubeedge/ca/streamCA.crt", alias="tlsStreamCAFile")
    tls_stream_cert_file: str = "/etc/kubeedge/certs/stream.crt"
    tls_stream_private_key_file: str = "/etc/kubeedge/certs/stream.key"
    tls_tunnel_ca_file: str = Field("/etc/kubeedge/ca/rootCA.crt", alias="tlsTunnelCAFile")
    tls_tunnel_cert_file: str = "/etc/kubeedge/certs/server.crt"
    tls_tunnel_private_key_file: str = "/etc/kubeedge/certs/server.key"


class CloudModulesConfig(ConfigSection):
    """``modules``: one section per CloudCore module."""

    cloud_hub: CloudHubConfig = Field(default_factory=CloudHubConfig)
    edge_controller: EdgeControllerConfig = Field(default_factory=EdgeControllerConfig)
    device_controller: DeviceControllerConfig = Field(default_factory=DeviceControllerConfig)
    cloud_stream: CloudStreamConfig = Field(default_factory=CloudStreamConfig)


class CloudcoreEdgetwinConfig(ConfigSection):
    """``edgetwin``: settings KubeEdge has no name for.

    ``nodeGracePeriod``: seconds without a keepalive before a node turns NotReady (the node lifecycle
    controller's ``node-monitor-grace-period``); ``nodeLeaseDuration``: the node Leases' duration;
    ``healthz``: where ``/healthz`` and ``/metrics`` are served (``""`` turns them off; the port is
    KubeEdge's monitor server's); ``installCRDs``: install edgetwin's CRDs on start; ``namespace``: where
    cloudcore keeps its Secrets and ObjectSyncs.
    """

    node_grace_period: float = Field(40.0, gt=0)
    node_lease_duration: int = Field(40, gt=0)
    healthz: str = "127.0.0.1:9091"
    install_crds: bool = Field(True, alias="installCRDs")
    namespace: str = "kubeedge"

    @field_validator("healthz")
    @classmethod
    def _healthz(cls, value: str) -> str:
        if value and (not _HOST_PORT.match(value) or not 0 < int(value.rpartition(":")[2]) <= 65535):
            raise ValueError("expected host:port, e.g. 127.0.0.1:9091, or empty to turn it off")
        return value

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if len(value) > 63 or not _DNS_LABEL.match(value):
            raise ValueError("a namespace name is a lower-case DNS label, e.g. kubeedge")
        return value


class CloudCoreConfig(ConfigSection):
    """The whole ``cloudcore.yaml``."""

    api_version: Literal["cloudcore.config.kubeedge.io/v1alpha1"] = API_VERSION
    kind: Literal["CloudCore"] = KIND
    kube_api_config: KubeAPIConfig = Field(default_factory=KubeAPIConfig, alias="kubeAPIConfig")
    modules: CloudModulesConfig = Field(default_factory=CloudModulesConfig)
    feature_gates: dict[str, bool] = Field(default_factory=dict)
    edgetwin: CloudcoreEdgetwinConfig = Field(default_factory=CloudcoreEdgetwinConfig)


def parse_config(data: object, source: str = "<config>") -> CloudCoreConfig:
    """Validate an already-parsed YAML document; the error names each field path and value at fault."""
    if not isinstance(data, dict):
        raise CloudCoreConfigError(source, "<document>", ["the file must hold a YAML mapping"])
    try:
        return CloudCoreConfig.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        issues = [
            f"{field_path(error['loc'])}: {error.get('input')!r} is not valid: "
            f"{error['msg'].removeprefix('Value error, ')}"
            for error in errors
        ]
        raise CloudCoreConfigError(source, field_path(errors[0]["loc"]), issues) from exc


def load_config(path: Path) -> CloudCoreConfig:
    """Read and validate ``path``; logs ONE warning listing the fields edgetwin ignores."""
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        reason = f"cannot read it: {exc.strerror or exc} (give the file with --config)"
        raise CloudCoreConfigError(str(path), "<file>", [reason]) from exc
    except yaml.YAMLError as exc:
        raise CloudCoreConfigError(str(path), "<document>", [f"not valid YAML: {exc}"]) from exc
    config = parse_config(data if data is not None else {}, str(path))
    warn_unknown_fields(path, config, log)
    return config


def dump_config(config: CloudCoreConfig) -> str:
    """The configuration as YAML, KubeEdge's field names, every default written out."""
    return dump_yaml(config)
