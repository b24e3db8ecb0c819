"""Where a mapper's devices come from: membership entries over MQTT, or Device / DeviceModel YAML files.

Either way a device becomes a :class:`~mappers.sdk.driver.DeviceConfig` after the same checks as
``edgetwin validate`` (the DeviceModel cross-checks and the protocol's typed configData), so a device that
cannot be driven is refused with the field to fix, once, instead of failing on every cycle.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from device_models import (
    API_VERSION,
    Device,
    DeviceModel,
    MembershipDevice,
    ModelValidationError,
    Problem,
    canonical_protocol_name,
    check_device_against_model,
    device_protocol_config,
    load_documents,
    parse_document,
    property_visitor_config,
)
from eventbus import topics
from mappers.sdk.driver import DeviceConfig, PropertyConfig
from mappers.sdk.errors import MapperConfigError

DEFAULT_COLLECT_CYCLE = 1.0
"""Seconds between reads of a property without ``collectCycle``."""

_Object = TypeVar("_Object", Device, DeviceModel)


def config_error(device: str, problems: Iterable[Problem], *, within: str = "") -> MapperConfigError:
    """The error refusing ``device`` for device_models' ``problems``: the first error's field, others listed.

    ``within`` is the path the problems' own paths are relative to (e.g. a property's visitor configData).
    """
    every = list(problems)
    first, *rest = [problem for problem in every if problem.is_error] or every
    reason = first.message + "".join(f"; also {problem}" for problem in rest)
    field = f"{within}.{first.path}" if within else first.path
    return MapperConfigError(device, field, first.value if first.has_value else None, reason)


def device_config(device: Device, model: DeviceModel) -> DeviceConfig:
    """Merge a Device with its DeviceModel; raises :class:`MapperConfigError` naming the field to fix."""
    problems = [problem for problem in check_device_against_model(device, model) if problem.is_error]
    if problems:
        raise config_error(device.id, problems)
    try:
        protocol = device_protocol_config(device)
        properties = tuple(_property_config(device, model, prop.name) for prop in device.spec.properties)
    except ModelValidationError as exc:
        raise config_error(device.id, exc.problems) from exc
    return DeviceConfig(device.namespace, device.name, protocol, properties)


def _property_config(device: Device, model: DeviceModel, name: str) -> PropertyConfig:
    prop = device.get_property(name)
    model_prop = model.get_property(name)
    # Both exist: check_device_against_model reported any property missing from the model.
    assert prop is not None and model_prop is not None  # noqa: PT018 - narrowing for mypy
    return PropertyConfig(
        name=name,
        model=model_prop,
        visitor=property_visitor_config(device, name),
        collect_cycle=prop.collect_cycle / 1000 if prop.collect_cycle else DEFAULT_COLLECT_CYCLE,
        report_cycle=prop.report_cycle / 1000 if prop.report_cycle else None,
    )


def membership_protocol(entry: MembershipDevice) -> str | None:
    """The (canonical) protocol name of a membership entry's device, if its spec names one."""
    protocol = (entry.spec or {}).get("protocol")
    name = protocol.get("protocolName") if isinstance(protocol, dict) else None
    return canonical_protocol_name(name) if isinstance(name, str) else None


def membership_config(entry: MembershipDevice) -> DeviceConfig:
    """The device of a ``membership/get/result`` or ``membership/updated`` entry.

    Needs edgetwin's **[ext]** ``spec`` and ``model`` fields; raises :class:`MapperConfigError` without them
    (KubeEdge's edgecore does not send them) or when they do not describe a valid device.
    """
    namespace, name = topics.split_device_id(entry.id)
    device_id = topics.device_id(namespace, name)
    if entry.spec is None or entry.model is None:
        raise MapperConfigError(
            device_id, "spec/model", None, "the membership entry carries no device spec or model"
        )
    try:
        device = _parse(Device, {"name": name, "namespace": namespace}, entry.spec)
        model_meta = {"name": device.spec.device_model_ref.name, "namespace": namespace}
        model = _parse(DeviceModel, model_meta, entry.model)
    except ModelValidationError as exc:
        raise config_error(device_id, exc.problems) from exc
    return device_config(device, model)


def _parse(kind: type[_Object], metadata: dict[str, str], spec: Mapping[str, Any]) -> _Object:
    parsed = parse_document(
        {"apiVersion": API_VERSION, "kind": kind.__name__, "metadata": metadata, "spec": spec}
    )
    if not isinstance(parsed, kind):  # parse_document returns the kind it was given
        raise TypeError(f"expected a {kind.__name__}, parsed {type(parsed).__name__}")
    return parsed


def load_device_configs(
    path: Path, *, node: str | None, protocol: str
) -> tuple[list[DeviceConfig], list[MapperConfigError]]:
    """The devices of ``protocol`` in a file or directory of Device / DeviceModel YAML.

    Devices bound to another node are skipped (all are taken when ``node`` is None or the Device has no
    ``nodeName``). Returns the devices and, separately, those that cannot be driven; a file that does not
    parse raises ``ModelValidationError``.
    """
    objects = load_documents(path)
    models = {obj.id: obj for obj in objects if isinstance(obj, DeviceModel)}
    # Each Device is let go once converted, so that a big file's documents and the configs made of them are
    # not all alive at once: the mapper's memory stays lower for good (freed memory is reused, not returned).
    devices = deque(obj for obj in objects if isinstance(obj, Device))
    del objects
    configs: list[DeviceConfig] = []
    refused: list[MapperConfigError] = []
    while devices:
        device = devices.popleft()
        if node and device.node_name and device.node_name != node:
            continue
        if canonical_protocol_name(device.protocol_name or "") != canonical_protocol_name(protocol):
            continue
        model = models.get(device.model_id)
        if model is None:
            reason = f"no DeviceModel {device.model_id} in {path}"
            ref = device.spec.device_model_ref.name
            refused.append(MapperConfigError(device.id, "spec.deviceModelRef.name", ref, reason))
            continue
        try:
            configs.append(device_config(device, model))
        except MapperConfigError as exc:
            refused.append(exc)
    return configs, refused
