"""What a Pod needs on its node (the ConfigMaps and Secrets it names) and whether it may run there.

Pure functions over the API's JSON (dicts), so the controller can call them on every event.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from cloudcore.nodes import EDGE_ROLE_LABEL

__all__ = ["EDGE_TAINT_EFFECT", "PodReferences", "edge_taint", "pod_references", "tolerates"]

#: The effect of the taint ``edgetwin join --with-edge-taint`` puts on an edge node.
EDGE_TAINT_EFFECT: Final = "NoSchedule"
_CONTAINER_LISTS: Final = ("initContainers", "containers", "ephemeralContainers")

JsonObject = Mapping[str, Any]


@dataclass(frozen=True)
class PodReferences:
    """The names of the ConfigMaps and Secrets a Pod names (in its own namespace)."""

    configmaps: frozenset[str]
    secrets: frozenset[str]


def pod_references(pod: JsonObject) -> PodReferences:
    """The ConfigMaps and Secrets ``pod`` needs: volumes (also projected), env, envFrom, imagePullSecrets."""
    spec = pod.get("spec") or {}
    configmaps: set[str] = set()
    secrets: set[str] = set()
    for volume in spec.get("volumes") or []:
        configmaps.add(_name(volume.get("configMap"), "name"))
        secrets.add(_name(volume.get("secret"), "secretName"))
        for source in (volume.get("projected") or {}).get("sources") or []:
            configmaps.add(_name(source.get("configMap"), "name"))
            secrets.add(_name(source.get("secret"), "name"))
    for container in _containers(spec):
        for env in container.get("env") or []:
            value_from = env.get("valueFrom") or {}
            configmaps.add(_name(value_from.get("configMapKeyRef"), "name"))
            secrets.add(_name(value_from.get("secretKeyRef"), "name"))
        for env_from in container.get("envFrom") or []:
            configmaps.add(_name(env_from.get("configMapRef"), "name"))
            secrets.add(_name(env_from.get("secretRef"), "name"))
    for pull_secret in spec.get("imagePullSecrets") or []:
        secrets.add(_name(pull_secret, "name"))
    configmaps.discard("")
    secrets.discard("")
    return PodReferences(frozenset(configmaps), frozenset(secrets))


def edge_taint(node: JsonObject) -> JsonObject | None:
    """The node's ``node-role.kubernetes.io/edge:NoSchedule`` taint, if it has one."""
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("key") == EDGE_ROLE_LABEL and taint.get("effect") == EDGE_TAINT_EFFECT:
            return dict(taint)
    return None


def tolerates(pod: JsonObject, taint: JsonObject) -> bool:
    """Whether one of the pod's tolerations matches ``taint``, as the scheduler decides it."""
    for toleration in (pod.get("spec") or {}).get("tolerations") or []:
        effect, key = toleration.get("effect") or "", toleration.get("key") or ""
        operator = toleration.get("operator") or "Equal"
        if effect and effect != taint.get("effect"):
            continue
        if operator == "Exists":
            if not key or key == taint.get("key"):
                return True
        elif key == taint.get("key") and (toleration.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def _containers(spec: JsonObject) -> Iterator[JsonObject]:
    for field in _CONTAINER_LISTS:
        yield from spec.get(field) or []


def _name(reference: JsonObject | None, field: str) -> str:
    return str((reference or {}).get(field) or "")
