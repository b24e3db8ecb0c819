"""cloudcore.yaml: KubeEdge's names and defaults, edgetwin's section, clear errors, round trip."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from cloudcore import CloudCoreConfig, CloudCoreConfigError, dump_config, load_config, parse_config

KUBEEDGE_FILE = """\
apiVersion: cloudcore.config.kubeedge.io/v1alpha1
kind: CloudCore
kubeAPIConfig:
  kubeConfig: /root/.kube/config
  master: ""
  qps: 50
  burst: 80
  contentType: application/vnd.kubernetes.protobuf
modules:
  cloudHub:
    advertiseAddress:
    - 192.0.2.10
    dnsNames: [cloud.example]
    nodeLimit: 2000
    tlsCAFile: /etc/kubeedge/ca/rootCA.crt
    tlsCAKeyFile: /etc/kubeedge/ca/rootCA.key
    tlsCertFile: /etc/kubeedge/certs/server.crt
    tlsPrivateKeyFile: /etc/kubeedge/certs/server.key
    unixsocket:
      address: unix:///var/lib/kubeedge/kubeedge.sock
      enable: true
    websocket:
      address: 0.0.0.0
      enable: true
      port: 10000
    quic:
      enable: false
      port: 10001
    https:
      address: 0.0.0.0
      enable: true
      port: 10002
  edgeController:
    enable: true
    nodeUpdateFrequency: 5
  deviceController:
    enable: false
  router:
    enable: false
"""


def test_defaults_are_kubeedges() -> None:
    config = CloudCoreConfig()

    hub = config.modules.cloud_hub
    assert (hub.websocket.port, hub.quic.port, hub.https.port) == (10000, 10001, 10002)
    assert (hub.websocket.enable, hub.https.enable, hub.quic.enable) == (True, True, False)
    assert (hub.keepalive_interval, hub.node_limit, hub.token_refresh_duration) == (30, 1000, 12)
    assert hub.tls_ca_file == "/etc/kubeedge/ca/rootCA.crt"
    assert (config.kube_api_config.qps, config.kube_api_config.burst) == (100, 200)
    assert config.modules.edge_controller.node_update_frequency == 10
    assert config.modules.device_controller.enable
    assert config.edgetwin.node_grace_period == 40.0
    assert config.edgetwin.install_crds
    assert config.edgetwin.namespace == "kubeedge"


def test_a_kubeedge_file_loads_and_unused_fields_are_listed_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "cloudcore.yaml"
    path.write_text(KUBEEDGE_FILE)

    with caplog.at_level(logging.WARNING):
        config = load_config(path)

    assert config.kube_api_config.kube_config == "/root/.kube/config"
    assert (config.kube_api_config.qps, config.kube_api_config.burst) == (50, 80)
    assert config.modules.cloud_hub.advertise_address == ["192.0.2.10"]
    assert config.modules.cloud_hub.dns_names == ["cloud.example"]
    assert config.modules.cloud_hub.node_limit == 2000
    assert config.modules.edge_controller.node_update_frequency == 5
    assert not config.modules.device_controller.enable
    warnings = [record for record in caplog.records if "ignoring" in record.getMessage()]
    assert len(warnings) == 1
    assert config.unknown_fields() == [
        "kubeAPIConfig.contentType",
        "modules.router",
        "modules.cloudHub.unixsocket",
    ]


def test_edgetwin_section() -> None:
    config = parse_config(
        {
            "edgetwin": {
                "nodeGracePeriod": 2.5,
                "nodeLeaseDuration": 10,
                "healthz": "",
                "installCRDs": False,
                "namespace": "edge-system",
            }
        }
    )

    assert config.edgetwin.node_grace_period == 2.5
    assert config.edgetwin.node_lease_duration == 10
    assert config.edgetwin.healthz == ""
    assert not config.edgetwin.install_crds
    assert config.edgetwin.namespace == "edge-system"


@pytest.mark.parametrize(
    ("document", "field", "hint"),
    [
        ({"modules": {"cloudHub": {"quic": {"enable": True}}}}, "modules.cloudHub.quic.enable", "QUIC"),
        (
            {"modules": {"cloudHub": {"websocket": {"port": 70000}}}},
            "modules.cloudHub.websocket.port",
            "65535",
        ),
        ({"edgetwin": {"nodeGracePeriod": 0}}, "edgetwin.nodeGracePeriod", "greater than 0"),
        ({"edgetwin": {"healthz": "localhost"}}, "edgetwin.healthz", "host:port"),
        ({"edgetwin": {"namespace": "Not_A_Name"}}, "edgetwin.namespace", "DNS label"),
        ({"kind": "EdgeCore"}, "kind", "CloudCore"),
    ],
)
def test_invalid_fields_are_named(document: dict[str, object], field: str, hint: str) -> None:
    with pytest.raises(CloudCoreConfigError) as refused:
        parse_config(document, "cloudcore.yaml")

    assert refused.value.field == field
    assert hint in str(refused.value)
    assert "cloudcore.yaml" in str(refused.value)


def test_unreadable_or_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(CloudCoreConfigError, match="cannot read it"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("modules: [\n")
    with pytest.raises(CloudCoreConfigError, match="not valid YAML"):
        load_config(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n")
    with pytest.raises(CloudCoreConfigError, match="YAML mapping"):
        load_config(listed)


def test_empty_file_is_all_defaults(tmp_path: Path) -> None:
    path = tmp_path / "cloudcore.yaml"
    path.write_text("")

    assert load_config(path) == CloudCoreConfig()


def test_dump_round_trips_with_kubeedge_names() -> None:
    config = parse_config(yaml.safe_load(KUBEEDGE_FILE))

    dumped = yaml.safe_load(dump_config(config))

    assert dumped["apiVersion"] == "cloudcore.config.kubeedge.io/v1alpha1"
    assert dumped["kubeAPIConfig"]["kubeConfig"] == "/root/.kube/config"
    assert dumped["modules"]["cloudHub"]["tlsCAFile"] == "/etc/kubeedge/ca/rootCA.crt"
    assert dumped["edgetwin"]["installCRDs"] is True
    assert parse_config(dumped) == config
