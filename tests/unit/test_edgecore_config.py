"""edgecore.yaml: KubeEdge's names and defaults, KubeEdge files accepted, bad values named."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from edgecore import (
    EdgeCoreConfig,
    EdgeCoreConfigError,
    MqttMode,
    broker_settings,
    dump_config,
    load_config,
    parse_config,
)

REPO = Path(__file__).resolve().parents[2]

# Shaped like the file `keadm join` writes for KubeEdge v1.20: many fields edgetwin does not use.
KUBEEDGE_FILE = """
apiVersion: edgecore.config.kubeedge.io/v1alpha2
kind: EdgeCore
database:
  aliasName: default
  dataSource: /var/lib/kubeedge/edgecore.db
  driverName: sqlite3
modules:
  dbTest:
    enable: false
  deviceTwin:
    dmiSockPath: /etc/kubeedge/dmi.sock
    enable: true
  edgeHub:
    enable: true
    heartbeat: 15
    httpServer: https://192.168.1.10:10002
    messageBurst: 60
    messageQPS: 30
    projectID: e632aba927ea4ac2b575ec1603d56f10
    quic:
      enable: false
      handshakeTimeout: 30
      readDeadline: 15
      server: 192.168.1.10:10001
      writeDeadline: 15
    rotateCertificates: true
    tlsCaFile: /etc/kubeedge/ca/rootCA.crt
    tlsCertFile: /etc/kubeedge/certs/server.crt
    tlsPrivateKeyFile: /etc/kubeedge/certs/server.key
    token: ""
    websocket:
      enable: true
      handshakeTimeout: 30
      readDeadline: 15
      server: 192.168.1.10:10000
      writeDeadline: 15
  edgeStream:
    enable: false
    handshakeTimeout: 30
    server: 192.168.1.10:10004
  edged:
    enable: true
    hostnameOverride: edge-node-7
    maxContainerCount: -1
    podSandboxImage: kubeedge/pause:3.6
    registerNodeNamespace: default
    tailoredKubeletConfig:
      address: 127.0.0.1
      cgroupDriver: cgroupfs
      evictionHard:
        memory.available: 100Mi
  eventBus:
    enable: true
    eventBusTLS:
      enable: false
      tlsMqttCAFile: /etc/kubeedge/ca/rootCA.crt
      tlsMqttCertFile: /etc/kubeedge/certs/server.crt
      tlsMqttPrivateKeyFile: /etc/kubeedge/certs/server.key
    mqttMode: 2
    mqttQOS: 0
    mqttRetain: false
    mqttServerExternal: tcp://127.0.0.1:1883
    mqttServerInternal: tcp://127.0.0.1:1884
    mqttSessionQueueSize: 100
  metaManager:
    contextSendGroup: hub
    contextSendModule: websocket
    enable: true
    metaServer:
      enable: false
      server: 127.0.0.1:10550
    remoteQueryTimeout: 60
  serviceBus:
    enable: false
  taskManager:
    enable: false
"""


def test_defaults_mirror_kubeedge() -> None:
    config = EdgeCoreConfig()
    assert config.api_version == "edgecore.config.kubeedge.io/v1alpha2"
    assert config.kind == "EdgeCore"
    assert config.database.driver_name == "sqlite3"
    assert config.database.data_source == "/var/lib/kubeedge/edgecore.db"
    assert config.modules.event_bus.mqtt_mode is MqttMode.EXTERNAL
    assert config.modules.event_bus.broker_url == "tcp://127.0.0.1:1883"
    assert config.modules.event_bus.mqtt_server_internal == "tcp://127.0.0.1:1884"
    assert config.modules.event_bus.mqtt_session_queue_size == 100
    assert config.modules.edge_hub.heartbeat == 15
    assert config.modules.meta_manager.meta_server.server == "127.0.0.1:10550"
    assert config.modules.device_twin.dmi_sock_path == "/etc/kubeedge/dmi.sock"
    assert config.edgetwin.healthz == "127.0.0.1:10256"
    assert config.node_name  # the machine's hostname, as KubeEdge picks it


def test_default_config_dump_is_complete_and_loads_back() -> None:
    text = dump_config(EdgeCoreConfig())
    data = yaml.safe_load(text)
    # KubeEdge's spelling, not Python's.
    assert set(data["modules"]["eventBus"]) >= {
        "mqttMode",
        "mqttQOS",
        "mqttServerExternal",
        "mqttServerInternal",
        "mqttSessionQueueSize",
        "mqttSubClientID",
        "eventBusTLS",
    }
    assert data["modules"]["edgeHub"]["projectID"] == "e632aba927ea4ac2b575ec1603d56f10"
    assert data["modules"]["metaManager"]["metaServer"]["enable"] is False
    reloaded = parse_config(data)
    assert reloaded == EdgeCoreConfig.model_validate(data)
    assert reloaded.unknown_fields() == []


def test_kubeedge_file_loads_with_one_warning_listing_unknown_fields(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "edgecore.yaml"
    path.write_text(KUBEEDGE_FILE)
    with caplog.at_level(logging.WARNING, logger="edgecore"):
        config = load_config(path)
    assert config.node_name == "edge-node-7"
    assert config.modules.event_bus.broker_url == "tcp://127.0.0.1:1883"
    assert config.modules.edge_hub.websocket.server == "192.168.1.10:10000"
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    for field in (
        "modules.dbTest",
        "modules.serviceBus",
        "modules.taskManager",
        "modules.edged.tailoredKubeletConfig",
        "modules.edged.maxContainerCount",
        "modules.edged.podSandboxImage",
    ):
        assert field in message
    # Fields edgetwin reads are not reported as ignored.
    assert "mqttServerExternal" not in message
    assert "dmiSockPath" not in message


def test_kubeedge_file_fields_survive_a_dump(tmp_path: Path) -> None:
    config = parse_config(yaml.safe_load(KUBEEDGE_FILE))
    dumped = yaml.safe_load(dump_config(config))
    assert dumped["modules"]["edged"]["tailoredKubeletConfig"]["cgroupDriver"] == "cgroupfs"


def test_example_file_is_valid_and_self_contained() -> None:
    config = load_config(REPO / "config" / "edgecore.yaml")
    assert config.unknown_fields() == []
    # Internal mode: runs its own broker, so the example needs nothing else to start.
    assert config.modules.event_bus.mqtt_mode is MqttMode.INTERNAL
    assert config.modules.edge_hub.enable is False


@pytest.mark.parametrize(
    ("document", "field", "value"),
    [
        ({"modules": {"eventBus": {"mqttMode": 7}}}, "modules.eventBus.mqttMode", 7),
        ({"modules": {"eventBus": {"mqttMode": 1}}}, "modules.eventBus.mqttMode", 1),
        ({"modules": {"eventBus": {"mqttQOS": 3}}}, "modules.eventBus.mqttQOS", 3),
        (
            {"modules": {"eventBus": {"mqttServerExternal": "localhost"}}},
            "modules.eventBus.mqttServerExternal",
            "localhost",
        ),
        (
            {"modules": {"eventBus": {"mqttSessionQueueSize": 0}}},
            "modules.eventBus.mqttSessionQueueSize",
            0,
        ),
        ({"modules": {"edgeHub": {"heartbeat": "often"}}}, "modules.edgeHub.heartbeat", "often"),
        ({"modules": {"edged": {"hostnameOverride": "Edge_1"}}}, "modules.edged.hostnameOverride", "Edge_1"),
        (
            {"modules": {"metaManager": {"metaServer": {"server": "nowhere"}}}},
            "modules.metaManager.metaServer.server",
            "nowhere",
        ),
        ({"database": {"driverName": "mysql"}}, "database.driverName", "mysql"),
        ({"database": {"dataSource": ""}}, "database.dataSource", ""),
        (
            {"apiVersion": "edgecore.config.kubeedge.io/v1alpha1"},
            "apiVersion",
            "edgecore.config.kubeedge.io/v1alpha1",
        ),
        ({"kind": "CloudCore"}, "kind", "CloudCore"),
        ({"edgetwin": {"healthz": "10256"}}, "edgetwin.healthz", "10256"),
        ({"edgetwin": {"restartBackoff": {"initial": -1}}}, "edgetwin.restartBackoff.initial", -1),
    ],
)
def test_invalid_value_names_field_and_value(document: dict[str, object], field: str, value: object) -> None:
    with pytest.raises(EdgeCoreConfigError) as caught:
        parse_config(document, "edgecore.yaml")
    assert caught.value.field == field
    assert caught.value.value == value
    assert field in str(caught.value)
    assert repr(value) in str(caught.value)


def test_every_invalid_field_is_reported_at_once() -> None:
    with pytest.raises(EdgeCoreConfigError) as caught:
        parse_config({"modules": {"eventBus": {"mqttMode": 5, "mqttQOS": 9}}})
    assert {issue.field for issue in caught.value.issues} == {
        "modules.eventBus.mqttMode",
        "modules.eventBus.mqttQOS",
    }


def test_internal_mode_connects_to_the_internal_broker() -> None:
    config = parse_config(
        {"modules": {"eventBus": {"mqttMode": 0, "mqttServerInternal": "tcp://127.0.0.1:2884"}}}
    )
    assert config.modules.event_bus.broker_url == "tcp://127.0.0.1:2884"


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    path = tmp_path / "edgecore.yaml"
    path.write_text("")
    assert load_config(path) == EdgeCoreConfig()


@pytest.mark.parametrize(
    ("text", "reason"),
    [("modules: [unclosed", "not valid YAML"), ("- a\n- b\n", "must hold a YAML mapping")],
)
def test_unreadable_file_is_a_clear_error(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "edgecore.yaml"
    path.write_text(text)
    with pytest.raises(EdgeCoreConfigError, match=reason) as caught:
        load_config(path)
    assert caught.value.source == str(path)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EdgeCoreConfigError, match="No such file"):
        load_config(tmp_path / "absent.yaml")


def test_secrets_are_not_repeated_in_errors() -> None:
    with pytest.raises(EdgeCoreConfigError) as caught:
        parse_config({"modules": {"eventBus": {"mqttPassword": ["s3cret"]}}})
    assert caught.value.field == "modules.eventBus.mqttPassword"
    assert "s3cret" not in str(caught.value)


def test_broker_settings_follow_the_event_bus_section(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    config = parse_config(
        {
            "modules": {
                "eventBus": {
                    "mqttServerExternal": "tcp://broker.local:8883",
                    "mqttUsername": "edge",
                    "mqttPassword": "pw",
                    "mqttSessionQueueSize": 42,
                    "eventBusTLS": {
                        "enable": True,
                        "tlsMqttCAFile": str(ca),
                        "tlsMqttCertFile": "",
                        "tlsMqttPrivateKeyFile": "",
                    },
                }
            }
        }
    )
    settings = broker_settings(config)
    assert settings.url == "ssl://broker.local:8883"
    assert (settings.username, settings.password, settings.ca_file) == ("edge", "pw", ca)
    assert settings.max_inflight == 42


def test_inconsistent_broker_settings_name_the_field() -> None:
    config = parse_config({"modules": {"eventBus": {"mqttPassword": "s3cret"}}})
    with pytest.raises(EdgeCoreConfigError) as caught:
        broker_settings(config)
    assert caught.value.field == "modules.eventBus.mqttUsername"
    assert "s3cret" not in str(caught.value)
