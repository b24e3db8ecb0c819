"""Pod and container specs turned into CRI configs: quantities, limits, namespaces, labels, bad fields."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from edgecore.edged import parse_quantity
from edgecore.edged.cri import runtime_v1_pb2 as cri
from edgecore.edged.specs import container_config, sandbox_config
from edgecore.errors import PodSpecError

POD: dict[str, Any] = {
    "metadata": {"name": "web", "namespace": "shop", "uid": "u-1", "labels": {"app": "web"}},
    "spec": {
        "hostPID": True,
        "containers": [
            {
                "name": "nginx",
                "image": "nginx:1.25",
                "ports": [{"containerPort": 80, "hostPort": 8080}],
                "resources": {"limits": {"cpu": "500m", "memory": "1Gi"}, "requests": {"cpu": "100m"}},
                "securityContext": {"runAsUser": 101, "allowPrivilegeEscalation": False},
            }
        ],
    },
}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("128Mi", Decimal(128 * 2**20)),
        ("500m", Decimal("0.5")),
        ("1.5", Decimal("1.5")),
        ("2e3", Decimal(2000)),
        ("1G", Decimal(10**9)),
        ("1E", Decimal(10**18)),
        (3, Decimal(3)),
    ],
)
def test_kubernetes_quantities(text: str | int, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "Mi", "1.2.3", "12 Mi", "1Qi"])
def test_not_quantities(text: str) -> None:
    with pytest.raises(ValueError, match="not a quantity"):
        parse_quantity(text)


def test_sandbox_config_as_kubelet_makes_it() -> None:
    config = sandbox_config(
        POD, host_network=False, log_dir=Path("/var/log/pods/x"), cgroup_parent="/edgetwin"
    )

    assert config.metadata.name == "web"
    assert config.metadata.uid == "u-1"
    assert config.hostname == "web"
    assert config.linux.cgroup_parent == "/edgetwin/podu-1"
    options = config.linux.security_context.namespace_options
    assert (options.network, options.pid, options.ipc) == (cri.POD, cri.NODE, cri.POD)
    assert config.labels["app"] == "web"
    assert config.labels["io.kubernetes.pod.uid"] == "u-1"
    [port] = config.port_mappings
    assert (port.container_port, port.host_port, port.protocol) == (80, 8080, cri.TCP)


def test_container_config_limits_and_security() -> None:
    sandbox = sandbox_config(POD, host_network=True, log_dir=Path("/logs"), cgroup_parent="/edgetwin")
    container = POD["spec"]["containers"][0]

    config = container_config(
        POD, container, sandbox=sandbox, mounts=[], env={"A": "1"}, log_path="nginx/3.log", restart_count=3
    )

    resources = config.linux.resources
    assert resources.memory_limit_in_bytes == 2**30
    assert (resources.cpu_period, resources.cpu_quota, resources.cpu_shares) == (100_000, 50_000, 102)
    security = config.linux.security_context
    assert (security.run_as_user.value, security.no_new_privs) == (101, True)
    assert security.namespace_options.network == cri.NODE
    assert config.metadata.attempt == 3
    assert config.annotations["io.kubernetes.container.restartCount"] == "3"
    assert config.labels["io.kubernetes.container.name"] == "nginx"
    assert [(env.key, env.value) for env in config.envs] == [("A", "1")]


@pytest.mark.parametrize(
    ("container", "field"),
    [
        ({"name": "c", "image": "x", "resources": {"limits": {"memory": "lots"}}}, "limits.memory"),
        ({"name": "c"}, ".image"),
        ({"image": "x"}, "spec.containers[].name"),
    ],
)
def test_bad_container_fields_are_named(container: dict[str, Any], field: str) -> None:
    sandbox = sandbox_config(POD, host_network=True, log_dir=Path("/logs"), cgroup_parent="/edgetwin")

    with pytest.raises(PodSpecError) as error:
        container_config(POD, container, sandbox=sandbox, mounts=[], env={}, log_path="c/0.log")

    assert error.value.field.endswith(field)


def test_a_pod_without_uid_is_refused() -> None:
    with pytest.raises(PodSpecError, match=r"metadata\.uid"):
        sandbox_config(
            {"metadata": {"name": "a", "namespace": "b"}},
            host_network=True,
            log_dir=Path("/l"),
            cgroup_parent="/e",
        )
