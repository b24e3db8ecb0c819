"""``edgecore.yaml``: KubeEdge's ``edgecore --config`` file (``edgecore.config.kubeedge.io/v1alpha2``).

Field names and defaults are KubeEdge's (``pkg/apis/componentconfig/edgecore/v1alpha2``), so a file
written for KubeEdge loads unchanged: fields edgetwin does not use are kept and listed in ONE warning.
edgetwin's own settings live in a separate top-level ``edgetwin`` section. Differences from KubeEdge's
defaults, each because edgetwin does not run that part yet: ``modules.edgeHub.enable`` and
``modules.edged.enable`` default to false.
"""

from __future__ import annotations

import logging
import re
import socket
from enum import IntEnum
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from edgecore.errors import ConfigIssue, EdgeCoreConfigError
from eventbus import EventBusConfigError
from eventbus.settings import parse_broker_url
from supervision.config import ConfigSection, dump_yaml, field_path, warn_unknown_fields

__all__ = [
    "API_VERSION",
    "KIND",
    "Database",
    "DeviceTwinConfig",
    "EdgeCoreConfig",
    "EdgeHubConfig",
    "EdgeStreamConfig",
    "EdgedConfig",
    "EdgetwinConfig",
    "EventBusConfig",
    "EventBusTLS",
    "MetaManagerConfig",
    "MetaServerConfig",
    "ModulesConfig",
    "MqttMode",
    "RestartBackoff",
    "TailoredKubeletConfig",
    "Taint",
    "dump_config",
    "load_config",
    "parse_config",
]

log = logging.getLogger(__name__)

API_VERSION: Final = "edgecore.config.kubeedge.io/v1alpha2"
KIND: Final = "EdgeCore"

_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:]+\]|[^/:\s\[\]]+):\d{1,5}$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


def _default_hostname() -> str:
    """The machine's hostname as a node name, as KubeEdge picks it (lower case, else a fixed name)."""
    name = socket.gethostname().lower()
    return name if _DNS_SUBDOMAIN.match(name) and len(name) <= 253 else "default-edge-node"


def _check_label_key(key: str) -> str:
    """A Kubernetes label or taint key: ``[prefix/]name``, prefix a DNS subdomain, name at most 63."""
    prefix, _, name = key.rpartition("/")
    if (prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix))) or (
        len(name) > 63 or not _LABEL_NAME.match(name)
    ):
        raise ValueError(f"{key!r} is not a label key, e.g. node-role.kubernetes.io/edge or zone")
    return key


def _check_host_port(value: str) -> str:
    if not _HOST_PORT.match(value) or int(value.rpartition(":")[2]) > 65535:
        raise ValueError("expected host:port, e.g. 127.0.0.1:10256")
    return value


class Database(ConfigSection):
    """``database``: where the edge's SQLite file is (twins, devices, metadata, subscribed topics)."""

    driver_name: Literal["sqlite3"] = "sqlite3"
    alias_name: str = "default"
    data_source: str = Field("/var/lib/kubeedge/edgecore.db", min_length=1)

    @property
    def path(self) -> Path:
        """The database file, relative paths taken from the working directory as KubeEdge does."""
        return Path(self.data_source).expanduser()


class MqttMode(IntEnum):
    """``modules.eventBus.mqttMode``: 0 runs edgecore's own broker, 2 connects to an external one."""

    INTERNAL = 0
    BOTH = 1
    EXTERNAL = 2


class EventBusTLS(ConfigSection):
    """``modules.eventBus.eventBusTLS``: TLS towards the MQTT broker."""

    enable: bool = False
    tls_mqtt_ca_file: str = Field("/etc/kubeedge/ca/rootCA.crt", alias="tlsMqttCAFile")
    tls_mqtt_cert_file: str = "/etc/kubeedge/certs/server.crt"
    tls_mqtt_private_key_file: str = "/etc/kubeedge/certs/server.key"


class EventBusConfig(ConfigSection):
    """``modules.eventBus``: the MQTT side of the edge.

    ``mqttQOS`` is the QoS of the subscriptions edgecore makes for uploads and extra topics; the twin's
    own replies are always QoS 1, retain false (CONTRACTS.md §1), so ``mqttRetain`` is read but unused.
    ``mqttSessionQueueSize`` bounds the in-flight window. ``mqttSubClientID`` / ``mqttPubClientID`` name
    the upload connection and the twin's connection (generated when empty). ``eventBusTLS`` applies to the
    external broker.
    """

    enable: bool = True
    mqtt_qos: int = Field(0, alias="mqttQOS", ge=0, le=2)
    mqtt_retain: bool = False
    mqtt_session_queue_size: int = Field(100, gt=0)
    mqtt_server_external: str = "tcp://127.0.0.1:1883"
    mqtt_server_internal: str = "tcp://127.0.0.1:1884"
    mqtt_sub_client_id: str = Field("", alias="mqttSubClientID")
    mqtt_pub_client_id: str = Field("", alias="mqttPubClientID")
    mqtt_username: str = ""
    mqtt_password: str = Field("", repr=False)
    mqtt_mode: MqttMode = MqttMode.EXTERNAL
    event_bus_tls: EventBusTLS = Field(default_factory=EventBusTLS, alias="eventBusTLS")

    @field_validator("mqtt_server_external", "mqtt_server_internal")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        try:
            parse_broker_url(value)
        except EventBusConfigError as exc:
            raise ValueError(f"expected a broker URL such as tcp://127.0.0.1:1883: {exc.reason}") from exc
        return value

    @field_validator("mqtt_mode", mode="before")
    @classmethod
    def _supported_mode(cls, value: object) -> object:
        if value not in (MqttMode.INTERNAL, MqttMode.EXTERNAL) or isinstance(value, bool):
            raise ValueError(
                "must be 0 (internal: edgecore runs its own mosquitto) or 2 (external broker); "
                "1 (both) is not supported by edgetwin"
            )
        return value

    @property
    def broker_url(self) -> str:
        """The broker edgecore connects to: its own (internal mode) or the external one."""
        if self.mqtt_mode is MqttMode.INTERNAL:
            return self.mqtt_server_internal
        return self.mqtt_server_external


class DeviceTwinConfig(ConfigSection):
    """``modules.deviceTwin``."""

    enable: bool = True
    dmi_sock_path: str = "/etc/kubeedge/dmi.sock"


class EdgeHubTransport(ConfigSection):
    """``modules.edgeHub.websocket`` / ``.quic``: one transport to CloudHub."""

    enable: bool = True
    handshake_timeout: int = Field(30, gt=0)
    read_deadline: int = Field(15, gt=0)
    server: str = "127.0.0.1:10000"
    write_deadline: int = Field(15, gt=0)

    @field_validator("server")
    @classmethod
    def _server(cls, value: str) -> str:
        return _check_host_port(value)


class EdgeHubConfig(ConfigSection):
    """``modules.edgeHub``: the link to the cloud. ``enable: false`` runs the edge without a cloud."""

    enable: bool = False
    heartbeat: int = Field(15, gt=0)
    message_qps: int = Field(30, alias="messageQPS", gt=0)
    message_burst: int = Field(60, gt=0)
    project_id: str = Field("e632aba927ea4ac2b575ec1603d56f10", alias="projectID")
    tls_ca_file: str = "/etc/kubeedge/ca/rootCA.crt"
    tls_cert_file: str = "/etc/kubeedge/certs/server.crt"
    tls_private_key_file: str = "/etc/kubeedge/certs/server.key"
    quic: EdgeHubTransport = Field(
        default_factory=lambda: EdgeHubTransport(enable=False, server="127.0.0.1:10001")
    )
    websocket: EdgeHubTransport = Field(default_factory=EdgeHubTransport)
    token: str = Field("", repr=False)
    http_server: str = "https://127.0.0.1:10002"
    rotate_certificates: bool = True


class Taint(ConfigSection):
    """A node taint (Kubernetes ``v1.Taint``), e.g. ``node-role.kubernetes.io/edge:NoSchedule``."""

    key: str = Field(min_length=1)
    value: str = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        return _check_label_key(value)


class TailoredKubeletConfig(ConfigSection):
    """``modules.edged.tailoredKubeletConfig``: the taints the node registers with, the CRI endpoint, and
    the cgroup under which pods get theirs (``cgroupRoot``, as kubelet's)."""

    register_with_taints: list[Taint] = Field(default_factory=list)
    container_runtime_endpoint: str = Field("unix:///run/containerd/containerd.sock", min_length=1)
    cgroup_root: str = Field("/edgetwin", pattern=r"^/")


class EdgedConfig(ConfigSection):
    """``modules.edged``: the node identity (``hostnameOverride``) and what it registers with.

    ``nodeLabels`` and ``tailoredKubeletConfig.registerWithTaints`` are added to the Node when cloudcore
    creates it (``edgetwin join --labels`` / ``--with-edge-taint`` write them), as KubeEdge's edged does.
    With ``enable: true`` Edged runs the node's pods through containerd's CRI
    (``tailoredKubeletConfig.containerRuntimeEndpoint``); volumes and logs live under ``rootDirectory``.
    """

    enable: bool = False
    hostname_override: str = Field(default_factory=_default_hostname)
    node_ip: str = Field("", alias="nodeIP")
    register_node_namespace: str = "default"
    node_labels: dict[str, str] = Field(default_factory=dict)
    root_directory: str = Field("/var/lib/edged", min_length=1)
    tailored_kubelet_config: TailoredKubeletConfig = Field(default_factory=TailoredKubeletConfig)

    @field_validator("node_labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, label in value.items():
            _check_label_key(key)
            if len(label) > 63 or not _LABEL_VALUE.match(label):
                raise ValueError(
                    f"label {key}: {label!r} is not a label value (at most 63 letters, digits, "
                    "'-', '_', '.', starting and ending with a letter or digit)"
                )
        return value

    @field_validator("hostname_override")
    @classmethod
    def _node_name(cls, value: str) -> str:
        if value and (len(value) > 253 or not _DNS_SUBDOMAIN.match(value)):
            raise ValueError("a node name is a lower-case DNS subdomain, e.g. edge-node-1")
        return value


class MetaServerConfig(ConfigSection):
    """``modules.metaManager.metaServer``: local apps' view of the edge's cached objects."""

    enable: bool = False
    server: str = "127.0.0.1:10550"
    tls_ca_file: str = "/etc/kubeedge/ca/rootCA.crt"
    tls_cert_file: str = "/etc/kubeedge/certs/server.crt"
    tls_private_key_file: str = "/etc/kubeedge/certs/server.key"

    @field_validator("server")
    @classmethod
    def _server(cls, value: str) -> str:
        return _check_host_port(value)


class MetaManagerConfig(ConfigSection):
    """``modules.metaManager``."""

    enable: bool = True
    context_send_group: str = "hub"
    context_send_module: str = "websocket"
    remote_query_timeout: int = Field(60, gt=0)
    meta_server: MetaServerConfig = Field(default_factory=MetaServerConfig)


class EdgeStreamConfig(ConfigSection):
    """``modules.edgeStream``: the tunnel cloudcore's stream server reaches this node's pods through
    (``kubectl logs`` / ``exec``); ``server`` is cloudcore's ``modules.cloudStream.tunnelPort``. The
    ``tlsTunnel*`` files are the node's CA, certificate and key (``edgetwin join`` writes the edgeHub ones).
    """

    enable: bool = False
    handshake_timeout: int = Field(30, gt=0)
    read_deadline: int = Field(15, gt=0)
    server: str = "127.0.0.1:10004"
    tls_tunnel_ca_file: str = Field("/etc/kubeedge/ca/rootCA.crt", alias="tlsTunnelCAFile")
    tls_tunnel_cert_file: str = "/etc/kubeedge/certs/server.crt"
    tls_tunnel_private_key_file: str = "/etc/kubeedge/certs/server.key"
    write_deadline: int = Field(15, gt=0)

    @field_validator("server")
    @classmethod
    def _server(cls, value: str) -> str:
        return _check_host_port(value)


class ModulesConfig(ConfigSection):
    """``modules``: one section per EdgeCore module."""

    edged: EdgedConfig = Field(default_factory=EdgedConfig)
    edge_hub: EdgeHubConfig = Field(default_factory=EdgeHubConfig)
    event_bus: EventBusConfig = Field(default_factory=EventBusConfig)
    meta_manager: MetaManagerConfig = Field(default_factory=MetaManagerConfig)
    device_twin: DeviceTwinConfig = Field(default_factory=DeviceTwinConfig)
    edge_stream: EdgeStreamConfig = Field(default_factory=EdgeStreamConfig)


class RestartBackoff(ConfigSection):
    """``edgetwin.restartBackoff``: seconds between restarts of a failed module (doubling)."""

    initial: float = Field(0.5, gt=0)
    max: float = Field(30.0, gt=0)


class EdgetwinConfig(ConfigSection):
    """``edgetwin``: settings KubeEdge has no name for. ``healthz: ""`` turns the endpoint off."""

    healthz: str = "127.0.0.1:10256"
    restart_backoff: RestartBackoff = Field(default_factory=RestartBackoff)

    @field_validator("healthz")
    @classmethod
    def _healthz(cls, value: str) -> str:
        return _check_host_port(value) if value else value


class EdgeCoreConfig(ConfigSection):
    """The whole ``edgecore.yaml``."""

    api_version: Literal["edgecore.config.kubeedge.io/v1alpha2"] = API_VERSION
    kind: Literal["EdgeCore"] = KIND
    database: Database = Field(default_factory=Database)
    modules: ModulesConfig = Field(default_factory=ModulesConfig)
    feature_gates: dict[str, bool] = Field(default_factory=dict)
    edgetwin: EdgetwinConfig = Field(default_factory=EdgetwinConfig)

    @property
    def node_name(self) -> str:
        """This edge node's name (``modules.edged.hostnameOverride``); empty means no node binding."""
        return self.modules.edged.hostname_override


# Values never repeated in an error message (it ends up in logs).
_SECRET_FIELDS = frozenset({"mqttPassword", "token"})


def _issue(error: ErrorDetails) -> ConfigIssue:
    loc = error["loc"]
    secret = bool(loc) and loc[-1] in _SECRET_FIELDS
    value = "<redacted>" if secret else error.get("input")
    return ConfigIssue(field_path(loc), value, error["msg"].removeprefix("Value error, "))


def parse_config(data: object, source: str = "<config>") -> EdgeCoreConfig:
    """Validate an already-parsed YAML document; errors name each field path and value at fault."""
    if not isinstance(data, dict):
        raise EdgeCoreConfigError(
            source, [ConfigIssue("<document>", type(data).__name__, "the file must hold a YAML mapping")]
        )
    try:
        return EdgeCoreConfig.model_validate(data)
    except ValidationError as exc:
        raise EdgeCoreConfigError(source, [_issue(error) for error in exc.errors()]) from exc


def load_config(path: Path) -> EdgeCoreConfig:
    """Read and validate ``path``; logs ONE warning listing the fields edgetwin ignores."""
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        reason = f"cannot read it: {exc.strerror or exc} (give the file with --config)"
        raise EdgeCoreConfigError(path, [ConfigIssue("<file>", str(path), reason)]) from exc
    except yaml.YAMLError as exc:
        raise EdgeCoreConfigError(path, [ConfigIssue("<document>", None, f"not valid YAML: {exc}")]) from exc
    config = parse_config(data if data is not None else {}, str(path))
    warn_unknown_fields(path, config, log)
    return config


def dump_config(config: EdgeCoreConfig) -> str:
    """The configuration as YAML, KubeEdge's field names, every default written out."""
    return dump_yaml(config)
