"""What a Pod needs on its edge node and whether it tolerates the edge taint (pure functions)."""

from __future__ import annotations

from typing import Any

import pytest

from cloudcore import EDGE_ROLE_LABEL
from cloudcore.edge import edge_taint, pod_references, tolerates

EDGE_TAINT = {"key": EDGE_ROLE_LABEL, "effect": "NoSchedule"}


def test_every_way_a_pod_names_a_configmap_or_secret_is_found() -> None:
    pod = {
        "spec": {
            "volumes": [
                {"name": "a", "configMap": {"name": "cm-volume"}},
                {"name": "b", "secret": {"secretName": "secret-volume"}},
                {"name": "c", "emptyDir": {}},
                {
                    "name": "d",
                    "projected": {
                        "sources": [
                            {"configMap": {"name": "cm-projected"}},
                            {"secret": {"name": "s-projected"}},
                        ]
                    },
                },
            ],
            "initContainers": [{"name": "i", "envFrom": [{"configMapRef": {"name": "cm-envfrom"}}]}],
            "containers": [
                {
                    "name": "m",
                    "env": [
                        {"name": "A", "value": "plain"},
                        {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "cm-env", "key": "k"}}},
                        {"name": "C", "valueFrom": {"secretKeyRef": {"name": "secret-env", "key": "k"}}},
                        {"name": "D", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    ],
                    "envFrom": [{"secretRef": {"name": "secret-envfrom"}}],
                }
            ],
            "imagePullSecrets": [{"name": "registry"}],
        }
    }

    references = pod_references(pod)

    assert references.configmaps == {"cm-volume", "cm-projected", "cm-envfrom", "cm-env"}
    assert references.secrets == {"secret-volume", "s-projected", "secret-env", "secret-envfrom", "registry"}


def test_a_pod_without_references_needs_nothing() -> None:
    references = pod_references({"spec": {"containers": [{"name": "m", "image": "busybox"}]}})

    assert (references.configmaps, references.secrets) == (frozenset(), frozenset())


@pytest.mark.parametrize(
    ("toleration", "expected"),
    [
        ({"key": EDGE_ROLE_LABEL, "operator": "Exists", "effect": "NoSchedule"}, True),
        ({"key": EDGE_ROLE_LABEL, "operator": "Exists"}, True),
        ({"operator": "Exists"}, True),
        ({"key": EDGE_ROLE_LABEL, "operator": "Equal", "value": "", "effect": "NoSchedule"}, True),
        ({"key": EDGE_ROLE_LABEL, "value": "yes", "effect": "NoSchedule"}, False),
        ({"key": EDGE_ROLE_LABEL, "operator": "Exists", "effect": "NoExecute"}, False),
        ({"key": "other", "operator": "Exists"}, False),
    ],
)
def test_tolerations_match_the_edge_taint_as_the_scheduler_does(
    toleration: dict[str, Any], expected: bool
) -> None:
    assert tolerates({"spec": {"tolerations": [toleration]}}, EDGE_TAINT) is expected


def test_only_the_edge_noschedule_taint_counts() -> None:
    assert edge_taint({"spec": {"taints": [{"key": "other", "effect": "NoSchedule"}]}}) is None
    assert edge_taint({"spec": {"taints": [{"key": EDGE_ROLE_LABEL, "effect": "NoExecute"}]}}) is None
    assert edge_taint({"spec": {"taints": [EDGE_TAINT]}}) == EDGE_TAINT
