"""A container's environment and command line as kubelet builds them: ``envFrom``, ``env`` with
``valueFrom`` (ConfigMap / Secret keys, pod fields, resource limits) and ``$(VAR)`` expansion.

Order and precedence follow kubelet: ``envFrom`` sources first (each with its ``prefix``), then ``env``
entries, later ones winning. A literal ``value`` and ``command`` / ``args`` expand ``$(NAME)`` with what is
defined so far (``$$`` escapes a ``$``; an unknown name stays as written). A ConfigMap, Secret or key that
is missing raises :class:`PodConfigError` unless the reference is ``optional``: the container then waits with
``CreateContainerConfigError`` until the object arrives.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from edgecore.edged.quantity import parse_quantity
from edgecore.edged.volumes import ObjectSource, decode_secret
from edgecore.errors import PodConfigError, PodSpecError

__all__ = ["ContainerCommand", "PodAddresses", "container_command", "expand"]

# The syntax of an environment variable name kubelet accepts from envFrom (C identifiers plus . and -).
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_FIELD_KEY = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


@dataclass(frozen=True)
class PodAddresses:
    """The addresses a pod's ``fieldRef`` may ask for (``status.podIP``, ``status.hostIP``)."""

    pod_ip: str
    host_ip: str


@dataclass(frozen=True)
class ContainerCommand:
    """What a container runs with: its final environment, command and args."""

    env: dict[str, str]
    command: list[str]
    args: list[str]


def expand(text: str, variables: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion of ``text``: known names replaced, ``$$`` -> ``$``."""
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "$" and index + 1 < len(text):
            following = text[index + 1]
            if following == "$":
                out.append("$")
                index += 2
                continue
            if following == "(":
                close = text.find(")", index + 2)
                if close != -1:
                    name = text[index + 2 : close]
                    out.append(variables.get(name, text[index : close + 1]))
                    index = close + 1
                    continue
        out.append(char)
        index += 1
    return "".join(out)


def _pod_name(pod: Mapping[str, Any]) -> str:
    metadata = pod.get("metadata") or {}
    return f"{metadata.get('namespace')}/{metadata.get('name')}"


def _lookup(
    objects: ObjectSource,
    pod: Mapping[str, Any],
    resource_type: str,
    reference: Mapping[str, Any],
    field: str,
) -> dict[str, Any] | None:
    namespace = str((pod.get("metadata") or {}).get("namespace", ""))
    obj = objects.get(resource_type, namespace, str(reference.get("name")))
    if obj is None and not reference.get("optional"):
        raise PodConfigError(_pod_name(pod), field, f"{resource_type} {reference.get('name')!r} not found")
    return obj


def _values(resource_type: str, obj: Mapping[str, Any]) -> dict[str, str]:
    if resource_type == "configmap":
        return {str(key): str(value) for key, value in (obj.get("data") or {}).items()}
    keys = {*(obj.get("data") or {}), *(obj.get("stringData") or {})}
    decoded = {key: decode_secret(obj, key) for key in keys}
    return {key: value.decode(errors="replace") for key, value in decoded.items() if value is not None}


def _key_ref(
    objects: ObjectSource, pod: Mapping[str, Any], resource_type: str, ref: Mapping[str, Any], field: str
) -> str | None:
    obj = _lookup(objects, pod, resource_type, ref, field)
    if obj is None:
        return None
    values = _values(resource_type, obj)
    key = str(ref.get("key"))
    if key not in values:
        if ref.get("optional"):
            return None
        raise PodConfigError(_pod_name(pod), field, f"{resource_type} {ref.get('name')!r} has no key {key!r}")
    return values[key]


def _field_ref(pod: Mapping[str, Any], path: str, addresses: PodAddresses, field: str) -> str:
    metadata, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    simple = {
        "metadata.name": metadata.get("name", ""),
        "metadata.namespace": metadata.get("namespace", ""),
        "metadata.uid": metadata.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": addresses.pod_ip,
        "status.podIPs": addresses.pod_ip,
        "status.hostIP": addresses.host_ip,
        "status.hostIPs": addresses.host_ip,
    }
    if path in simple:
        return str(simple[path])
    if match := _FIELD_KEY.match(path):
        return str((metadata.get(match.group(1)) or {}).get(match.group(2), ""))
    raise PodSpecError(field, path, "not a field the edge can provide")


def _resource_ref(container: Mapping[str, Any], ref: Mapping[str, Any], field: str) -> str:
    resource = str(ref.get("resource", ""))
    section, _, name = resource.partition(".")
    value = ((container.get("resources") or {}).get(section) or {}).get(name)
    if section not in {"limits", "requests"} or name not in {"cpu", "memory"} or value is None:
        raise PodSpecError(field, resource, "the container sets no such limit or request")
    try:
        divisor = parse_quantity(ref.get("divisor") or "1")
        amount = parse_quantity(value)
    except ValueError as exc:
        raise PodSpecError(field, value, "not a Kubernetes quantity") from exc
    if divisor == Decimal(0):
        raise PodSpecError(f"{field}.divisor", ref.get("divisor"), "must not be zero")
    return str(math.ceil(amount / divisor))


def container_command(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    objects: ObjectSource,
    addresses: PodAddresses,
) -> ContainerCommand:
    """The container's environment (references resolved from ``objects``) and expanded command / args.

    Raises :class:`PodConfigError` for a missing ConfigMap / Secret / key, :class:`PodSpecError` for a
    reference the edge cannot resolve.
    """
    field = f"spec.containers[name={container.get('name')}]"
    env: dict[str, str] = {}
    for index, source in enumerate(container.get("envFrom") or []):
        prefix = str(source.get("prefix", ""))
        for kind, resource_type in (("configMapRef", "configmap"), ("secretRef", "secret")):
            if kind not in source:
                continue
            obj = _lookup(objects, pod, resource_type, source[kind], f"{field}.envFrom[{index}].{kind}")
            if obj is not None:
                values = _values(resource_type, obj)
                env.update(
                    {prefix + key: value for key, value in values.items() if _ENV_NAME.match(prefix + key)}
                )
    for index, entry in enumerate(container.get("env") or []):
        name = entry.get("name")
        entry_field = f"{field}.env[{index}]"
        if not isinstance(name, str) or not name:
            raise PodSpecError(f"{entry_field}.name", name, "an environment variable needs a name")
        value_from = entry.get("valueFrom")
        value: str | None
        if not value_from:
            value = expand(str(entry.get("value", "")), env)
        elif "configMapKeyRef" in value_from:
            value = _key_ref(objects, pod, "configmap", value_from["configMapKeyRef"], entry_field)
        elif "secretKeyRef" in value_from:
            value = _key_ref(objects, pod, "secret", value_from["secretKeyRef"], entry_field)
        elif "fieldRef" in value_from:
            value = _field_ref(pod, str(value_from["fieldRef"].get("fieldPath")), addresses, entry_field)
        elif "resourceFieldRef" in value_from:
            value = _resource_ref(container, value_from["resourceFieldRef"], entry_field)
        else:
            raise PodSpecError(f"{entry_field}.valueFrom", value_from, "no source the edge knows")
        if value is not None:
            env[name] = value
    return ContainerCommand(
        env=env,
        command=[expand(str(part), env) for part in container.get("command") or []],
        args=[expand(str(part), env) for part in container.get("args") or []],
    )
