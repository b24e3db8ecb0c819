"""What the twin knows about a device, and how edgecore / the cloud side declare one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from device_models import MsgAttr, MsgTwin


@dataclass(frozen=True)
class TwinProperty:
    """A property the device's model declares: value type, whether apps may delete it, desired value.

    ``type`` is one of int/integer, float, double, boolean, string, bytes (case-insensitive, so a
    DeviceModel's ``FLOAT`` works as it is). ``expected`` (the desired value) is left as it is when ``None``.
    """

    name: str
    type: str = "string"
    optional: bool = False
    expected: str | None = None


@dataclass(frozen=True)
class TwinDevice:
    """A device bound to this node, as edgecore (from the cloud's Device CR) declares it to the twin.

    ``spec`` / ``model`` are the free-form v1beta1 DeviceSpec and DeviceModelSpec, handed to mappers in
    membership messages **[ext]**.
    """

    namespace: str
    name: str
    description: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    properties: Sequence[TwinProperty] = ()
    spec: Mapping[str, Any] | None = None
    model: Mapping[str, Any] | None = None

    @property
    def id(self) -> str:
        """``<namespace>/<name>``."""
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class DeviceRecord:
    """The device's own fields (a row of the ``device`` table)."""

    id: str
    name: str
    description: str = ""
    state: str = ""
    last_online: str = ""
    spec: Mapping[str, Any] | None = None
    model: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class DeviceSnapshot:
    """A device as the twin holds it at one moment: its fields, attributes and twins.

    ``twins`` includes soft-deleted properties (type ``deleted``, kept for their versions) and carries
    versions; :meth:`live_twins` leaves the deleted ones out.
    """

    record: DeviceRecord
    attributes: Mapping[str, MsgAttr] = field(default_factory=dict)
    twins: Mapping[str, MsgTwin] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """``<namespace>/<name>``."""
        return self.record.id

    @property
    def namespace(self) -> str:
        """The device's namespace."""
        return self.record.id.partition("/")[0]

    @property
    def name(self) -> str:
        """The device's name within its namespace."""
        return self.record.name

    def live_twins(self) -> dict[str, MsgTwin]:
        """The properties that are not soft-deleted, by name."""
        return {name: twin for name, twin in self.twins.items() if not twin.is_deleted}
