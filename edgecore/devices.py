"""The ``--devices`` directory: Device + DeviceModel YAML turned into the twin's device declarations.

A standalone edge has no cloud to tell it its devices, so they come from files (the same flag the
mappers take). Each Device bound to this node becomes a :class:`devicetwin.TwinDevice` whose properties
carry the type from its DeviceModel and the desired value as expected, so the twin knows the device (and
answers ``twin/get`` with its properties) before any value is reported.
"""

from __future__ import annotations

import logging
from pathlib import Path

from device_models import Device, DeviceModel, validate_paths
from devicetwin import TwinDevice, TwinProperty
from edgecore.errors import DevicesDirError

__all__ = ["load_devices", "twin_device"]

log = logging.getLogger(__name__)


def twin_device(device: Device, model: DeviceModel, *, source: Path) -> TwinDevice:
    """Declare ``device`` to the twin: one property per ``spec.properties`` entry, typed by ``model``.

    INT → int, FLOAT / DOUBLE → float, BOOLEAN → boolean, STRING / BYTES → string; the desired value is the
    expected one. Raises :class:`DevicesDirError` naming the field when a property is not in the model.
    """
    properties = []
    for index, prop in enumerate(device.spec.properties):
        declared = model.get_property(prop.name)
        if declared is None:
            raise DevicesDirError(
                source,
                f"spec.properties[{index}].name",
                f"{device.label}: property {prop.name!r} is not in DeviceModel {model.id}",
            )
        properties.append(
            TwinProperty(
                name=prop.name,
                type=declared.type.twin_type,
                optional=False,
                expected=prop.desired.value if prop.desired is not None else None,
            )
        )
    return TwinDevice(
        namespace=device.metadata.namespace,
        name=device.metadata.name,
        properties=properties,
        spec=device.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
        model=model.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    )


def load_devices(directory: Path, node_name: str) -> list[TwinDevice]:
    """The devices of ``directory`` (recursively) for node ``node_name``, in file order.

    A Device belongs to this node when its ``spec.nodeName`` is the node's name or empty; with an empty
    ``node_name`` every Device is taken. Other kinds of documents (an ``edgecore.yaml`` in the same folder)
    are skipped. Invalid documents raise :class:`DevicesDirError` with the file and field of the first
    problem and every problem in the message.
    """
    if not directory.is_dir():
        raise DevicesDirError(directory, "", "is not a directory")
    reports = validate_paths([directory], skip_other_kinds=True)
    problems = [problem for report in reports for problem in report.problems]
    errors = [problem for problem in problems if problem.is_error]
    if errors:
        first = errors[0]
        raise DevicesDirError(
            Path(first.source or directory),
            first.path,
            first.message,
            problems=[str(error) for error in errors],
        )
    for problem in problems:
        log.warning("devices dir: %s", problem, extra={"path": problem.source})
    models = {report.obj.id: report.obj for report in reports if isinstance(report.obj, DeviceModel)}
    declared = []
    for report in reports:
        device = report.obj
        if not isinstance(device, Device) or (node_name and device.node_name not in (None, "", node_name)):
            continue
        model = models.get(device.model_id)
        if model is None:
            raise DevicesDirError(
                Path(report.source),
                "spec.deviceModelRef.name",
                f"{device.label}: DeviceModel {device.model_id} is not in {directory}",
            )
        declared.append(twin_device(device, model, source=Path(report.source)))
    log.info("loaded %d device(s) for node %s from %s", len(declared), node_name or "(any)", directory)
    return declared
