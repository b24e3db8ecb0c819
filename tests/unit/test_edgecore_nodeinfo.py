"""The Node an edge announces: identity, roles, taints, machine capacity and nodeInfo."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from cloudsync import Group, Operation, decode, encode
from edgecore import EDGE_TAINT, NodeInfo, kubelet_version, parse_config
from edgecore.nodeinfo import kubernetes_version


def test_kubelet_version_names_kubernetes_and_edgetwin() -> None:
    version = kubelet_version()

    kube, _, ours = version.partition("-edgetwin-v")
    assert kube == kubernetes_version()
    assert kube.startswith("v1.")
    assert kube.count(".") == 2
    assert ours  # edgetwin's own version follows


def test_labels_include_the_edge_roles_and_taints_are_kept(tmp_path: Path) -> None:
    info = NodeInfo("edge-1", labels={"site": "plant-7"}, taints=[EDGE_TAINT], data_dir=tmp_path)

    node = info.node()

    assert node["metadata"] == {
        "name": "edge-1",
        "labels": {
            "site": "plant-7",
            "node-role.kubernetes.io/edge": "",
            "node-role.kubernetes.io/agent": "",
        },
    }
    assert node["spec"]["taints"] == [
        {"key": "node-role.kubernetes.io/edge", "value": "", "effect": "NoSchedule"}
    ]


def test_capacity_comes_from_the_machine(tmp_path: Path) -> None:
    status = NodeInfo("edge-1", data_dir=tmp_path / "not" / "yet" / "created").node()["status"]

    capacity = status["capacity"]
    assert capacity["cpu"] == str(os.cpu_count())
    assert capacity["pods"] == "110"
    memory_kib = int(capacity["memory"].removesuffix("Ki"))
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 1024
    assert abs(memory_kib - physical) < physical * 0.05
    statvfs = os.statvfs(tmp_path)  # the nearest existing ancestor of the data directory
    assert int(capacity["ephemeral-storage"]) == statvfs.f_blocks * statvfs.f_frsize
    assert status["allocatable"] == capacity


def test_node_info_describes_the_machine() -> None:
    info = NodeInfo("edge-1", container_runtime_version="containerd://1.6.20").node()["status"]["nodeInfo"]

    assert info["kubeletVersion"] == kubelet_version()
    assert info["kernelVersion"] == platform.release()
    assert info["operatingSystem"] == "linux"
    assert info["architecture"] == {"x86_64": "amd64", "aarch64": "arm64"}.get(
        platform.machine(), info["architecture"]
    )
    assert info["osImage"]
    assert info["containerRuntimeVersion"] == "containerd://1.6.20"
    assert info["bootID"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def test_no_runtime_means_an_empty_runtime_version() -> None:
    # Present though empty: Kubernetes clients refuse a nodeInfo without it.
    assert NodeInfo("edge-1").node()["status"]["nodeInfo"]["containerRuntimeVersion"] == ""


def test_addresses_use_node_ip_when_configured() -> None:
    addresses = NodeInfo("edge-1", node_ip="10.0.0.7").node()["status"]["addresses"]

    assert addresses == [
        {"type": "InternalIP", "address": "10.0.0.7"},
        {"type": "Hostname", "address": "edge-1"},
    ]


def test_detected_address_is_an_ipv4_address() -> None:
    internal = NodeInfo("edge-1").node()["status"]["addresses"][0]

    assert internal["type"] == "InternalIP"
    assert len(internal["address"].split(".")) == 4


def test_from_config_reads_edged(tmp_path: Path) -> None:
    config = parse_config(
        {
            "database": {"dataSource": str(tmp_path / "edgecore.db")},
            "modules": {
                "edged": {
                    "hostnameOverride": "gateway-3",
                    "nodeIP": "10.9.8.7",
                    "registerNodeNamespace": "edge",
                    "nodeLabels": {"zone": "north"},
                    "tailoredKubeletConfig": {
                        "registerWithTaints": [
                            {"key": "node-role.kubernetes.io/edge", "effect": "NoSchedule"}
                        ]
                    },
                }
            },
        }
    )

    info = NodeInfo.from_config(config)
    node = info.node()

    assert info.resource == "edge/node/gateway-3"
    assert node["metadata"]["name"] == "gateway-3"
    assert node["metadata"]["labels"]["zone"] == "north"
    assert node["spec"]["taints"] == [
        {"key": "node-role.kubernetes.io/edge", "value": "", "effect": "NoSchedule"}
    ]
    assert node["status"]["addresses"][0] == {"type": "InternalIP", "address": "10.9.8.7"}
    statvfs = os.statvfs(tmp_path)
    assert int(node["status"]["capacity"]["ephemeral-storage"]) == statvfs.f_blocks * statvfs.f_frsize


async def test_message_is_the_insert_of_the_node_resource() -> None:
    info = NodeInfo("edge-1", labels={"site": "a"})

    message = decode(encode(await info.message()))

    assert message.operation is Operation.INSERT
    assert message.route.group == Group.RESOURCE
    assert message.resource == "default/node/edge-1"
    assert message.content["metadata"]["labels"]["site"] == "a"
    assert message.content["status"]["nodeInfo"]["kubeletVersion"] == kubelet_version()
