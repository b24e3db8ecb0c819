"""Whether a Device CR may go to its edge node: the checks of ``device_models``, as a condition's reason.

A Device is sent only when it parses, its DeviceModel exists and parses, and it passes
:func:`~device_models.check_device` and :func:`~device_models.check_device_against_model` (property names
in the model, desired values of the model's type within minimum..maximum, no desired value on a ReadOnly
property or a read-only register). Otherwise the verdict names the field, a condition reason and a
message; the controller reports it in the Device's status and as an Event.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from device_models import (
    Device,
    DeviceModel,
    ModelValidationError,
    Problem,
    check_device_against_model,
    parse_document,
)

__all__ = [
    "INVALID_DESIRED_VALUE",
    "INVALID_MODEL",
    "INVALID_SPEC",
    "MODEL_NOT_FOUND",
    "READ_ONLY_PROPERTY",
    "UNKNOWN_PROPERTY",
    "VALID",
    "Verdict",
    "parse_model",
    "validate_device",
]

VALID = "Valid"
MODEL_NOT_FOUND = "ModelNotFound"
INVALID_MODEL = "InvalidModel"
UNKNOWN_PROPERTY = "UnknownProperty"
INVALID_DESIRED_VALUE = "InvalidDesiredValue"
READ_ONLY_PROPERTY = "ReadOnlyProperty"
INVALID_SPEC = "InvalidSpec"
# How device_models' checks word a desired value on something that cannot be written.
_READ_ONLY_WORDS = frozenset({"ReadOnly", "read-only"})


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one Device: ``reason`` is :data:`VALID` or the reason of the first error.

    ``device`` is the parsed Device (``None`` when it does not parse), ``model`` its DeviceModel when
    found; ``field`` is the path of the first error (``""`` when valid).
    """

    reason: str
    device: Device | None = None
    model: DeviceModel | None = None
    field: str = ""
    message: str = ""

    @property
    def valid(self) -> bool:
        """True when the Device may go to the edge."""
        return self.reason == VALID


def parse_model(obj: Mapping[str, Any]) -> DeviceModel | None:
    """The DeviceModel of an API object, or ``None`` when it does not parse (its devices are then invalid)."""
    try:
        model = parse_document(obj)
    except ModelValidationError:
        return None
    return model if isinstance(model, DeviceModel) else None


def validate_device(obj: Mapping[str, Any], models: Mapping[str, Mapping[str, Any]]) -> Verdict:
    """Check the Device API object ``obj`` against the DeviceModel objects ``models`` (by ``<ns>/<name>``)."""
    try:
        device = parse_document(obj)
    except ModelValidationError as exc:
        return _invalid(list(exc.problems), None, None)
    if not isinstance(device, Device):
        return Verdict(INVALID_SPEC, field="kind", message="is not a Device")
    model_obj = models.get(device.model_id)
    if model_obj is None:
        return Verdict(
            MODEL_NOT_FOUND,
            device,
            field="spec.deviceModelRef.name",
            message=f"spec.deviceModelRef.name: DeviceModel {device.model_id} does not exist",
        )
    model = parse_model(model_obj)
    if model is None:
        return Verdict(
            INVALID_MODEL,
            device,
            field="spec.deviceModelRef.name",
            message=f"spec.deviceModelRef.name: DeviceModel {device.model_id} is not valid",
        )
    problems = [problem for problem in check_device_against_model(device, model) if problem.is_error]
    if problems:
        return _invalid(problems, device, model)
    return Verdict(VALID, device, model)


def _invalid(problems: list[Problem], device: Device | None, model: DeviceModel | None) -> Verdict:
    first = problems[0]
    message = "; ".join(str(dataclasses.replace(problem, obj=None, source=None)) for problem in problems)
    return Verdict(_reason(first), device, model, field=first.path, message=message)


def _reason(problem: Problem) -> str:
    if problem.path.endswith("desired.value"):
        return (
            READ_ONLY_PROPERTY if _READ_ONLY_WORDS & set(problem.message.split()) else INVALID_DESIRED_VALUE
        )
    if problem.path.endswith(".name") and "is not a property of" in problem.message:
        return UNKNOWN_PROPERTY
    return INVALID_SPEC
