"""KubeEdge's device-twin wire messages: the ``$hw/events`` bodies and the edge<->cloud twin sync content.

Field names, ``null`` handling and omissions mirror KubeEdge's ``edge/pkg/devicetwin/dttype``
(CONTRACTS.md §1): a field that is ``None`` is left out of the JSON (Go's ``omitempty``), except where the
contract wants an explicit ``null`` (a document's ``last`` / ``current``, a deleted property in a result's
``twin`` map).
Messages meant for MQTT apps cannot carry versions: their twin maps are stripped of ``expected_version`` /
``actual_version`` when the message is built. Only :class:`TwinSync` (edge<->cloud) keeps them.

Parsing is strict, like Go's ``encoding/json`` into typed structs: a number where a string is expected is an
error, not a coercion. Unknown keys are ignored.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)

from device_models.errors import EdgetwinError

#: Property names and values allowed on the wire (KubeEdge's ``ValidateTwinKey`` / ``ValidateTwinValue``).
PROPERTY_NAME_PATTERN = re.compile(r"[a-zA-Z0-9_.,:/@#-]{1,128}")
PROPERTY_VALUE_PATTERN = re.compile(r"[a-zA-Z0-9_.,:/@#-]{1,512}")

#: ``metadata.type`` of a soft-deleted property.
DELETED_TYPE = "deleted"
#: Type of a property that arrives without ``metadata.type``.
DEFAULT_TYPE = "string"
#: Value types a live property may have. KubeEdge's four (int/integer, float, boolean, string) plus
#: **[ext]** ``double`` and ``bytes``, the other DeviceModel types (values are strings on the wire anyway).
VALUE_TYPES = frozenset({"int", "integer", "float", "double", "boolean", "string", "bytes"})
#: States a device may report on ``state/update``.
DEVICE_STATES = frozenset({"online", "offline", "ok", "unknown", "unhealthy"})

_INT_PATTERN = re.compile(r"-?[0-9]+")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class TwinValidationError(EdgetwinError):
    """A property name, value or type breaks the twin contract; ``property`` names the property at fault."""

    def __init__(self, prop: str, value: str | None, reason: str) -> None:
        super().__init__(f"property {prop!r}: {reason}")
        self.property = prop
        self.value = value
        self.reason = reason


def validate_property_name(name: str) -> None:
    """Raise :class:`TwinValidationError` unless ``name`` is a valid twin property name."""
    if not PROPERTY_NAME_PATTERN.fullmatch(name):
        raise TwinValidationError(
            name, None, "name must be 1-128 characters of letters, digits and - _ . , : / @ #"
        )


def validate_value(prop: str, value_type: str, value: str) -> None:
    """Raise :class:`TwinValidationError` unless ``value`` is well-formed and parses as ``value_type``."""
    if not PROPERTY_VALUE_PATTERN.fullmatch(value):
        raise TwinValidationError(
            prop, value, "value must be 1-512 characters of letters, digits and - _ . , : / @ #"
        )
    if value_type in ("int", "integer"):
        if not _INT_PATTERN.fullmatch(value) or not _INT64_MIN <= int(value) <= _INT64_MAX:
            raise TwinValidationError(prop, value, f"value {value!r} is not an {value_type}")
    elif value_type in ("float", "double"):
        if not _parses_as_float(value):
            raise TwinValidationError(prop, value, f"value {value!r} is not a {value_type}")
    elif value_type == "boolean":
        if value not in ("true", "false"):
            raise TwinValidationError(prop, value, "a boolean value must be exactly true or false")
    elif value_type not in VALUE_TYPES:
        raise TwinValidationError(prop, value, f"value type {value_type!r} is not allowed")


def validate_value_type(prop: str, value_type: str) -> None:
    """Raise :class:`TwinValidationError` unless ``value_type`` is a type a live property may have."""
    if value_type not in VALUE_TYPES:
        allowed = ", ".join(sorted(VALUE_TYPES))
        raise TwinValidationError(prop, None, f"value type {value_type!r} is not allowed ({allowed})")


def _parses_as_float(value: str) -> bool:
    # Go's strconv.ParseFloat refuses digit separators that Python's float() accepts.
    if "_" in value:
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


def now_ms() -> int:
    """Current time as Unix milliseconds, the unit of every ``timestamp`` on the wire."""
    return time.time_ns() // 1_000_000


def new_event_id() -> str:
    """A fresh event id (UUID4 text), for messages the edge originates."""
    return str(uuid.uuid4())


class WireModel(BaseModel):
    """Base of every wire model: strict parsing, immutable, ``None`` fields omitted from the JSON."""

    model_config = ConfigDict(
        strict=True,
        frozen=True,
        extra="ignore",
        serialize_by_alias=True,
        validate_by_alias=True,
        validate_by_name=True,
    )

    #: Fields written as ``null`` when ``None`` instead of being left out.
    _keep_null: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _drop_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {key: value for key, value in data.items() if value is not None or key in self._keep_null}

    def to_json(self) -> bytes:
        """The message as compact JSON bytes, ready to publish."""
        return self.model_dump_json().encode()

    def to_dict(self) -> dict[str, Any]:
        """The message as a JSON-compatible dict (the ``content`` of an edge<->cloud message)."""
        return self.model_dump(mode="json")


class ValueMetadata(WireModel):
    """Metadata of a twin value: when the edge stored it (Unix ms)."""

    timestamp: int | None = None


class TwinValue(WireModel):
    """One side of a twin (``expected`` or ``actual``): a string value and its metadata."""

    value: str | None = None
    metadata: ValueMetadata | None = None


class TypeMetadata(WireModel):
    """Metadata of a twin property: its value type (``deleted`` once soft-deleted)."""

    type: str | None = None


class TwinVersion(WireModel):
    """Version pair of one side of a twin; bumped by the side (cloud or edge) that writes it."""

    cloud: int = 0
    edge: int = 0


class MsgTwin(WireModel):
    """A twin property on the wire: desired (``expected``) and reported (``actual``) value, plus versions."""

    expected: TwinValue | None = None
    actual: TwinValue | None = None
    optional: bool | None = None
    metadata: TypeMetadata | None = None
    expected_version: TwinVersion | None = None
    actual_version: TwinVersion | None = None

    @property
    def value_type(self) -> str:
        """The declared type, ``string`` when none is given."""
        if self.metadata is None or not self.metadata.type:
            return DEFAULT_TYPE
        return self.metadata.type

    @property
    def is_deleted(self) -> bool:
        """Whether the property is soft-deleted (type ``deleted``)."""
        return self.value_type == DELETED_TYPE

    @property
    def expected_value(self) -> str | None:
        """The desired value, if any."""
        return None if self.expected is None else self.expected.value

    @property
    def actual_value(self) -> str | None:
        """The reported value, if any."""
        return None if self.actual is None else self.actual.value

    def without_versions(self) -> Self:
        """A copy without ``expected_version`` / ``actual_version``, as MQTT apps see it."""
        if self.expected_version is None and self.actual_version is None:
            return self
        return self.model_copy(update={"expected_version": None, "actual_version": None})


class MsgAttr(WireModel):
    """A device attribute (static metadata such as a serial number)."""

    value: str = ""
    optional: bool | None = None
    metadata: TypeMetadata | None = None


def _strip_versions(twins: dict[str, MsgTwin]) -> dict[str, MsgTwin]:
    return {name: twin.without_versions() for name, twin in twins.items()}


def _strip_versions_nullable(twins: dict[str, MsgTwin | None]) -> dict[str, MsgTwin | None]:
    return {name: None if twin is None else twin.without_versions() for name, twin in twins.items()}


#: A twin map sent to MQTT apps: versions are removed whatever the caller passed.
AppTwins = Annotated[dict[str, MsgTwin], AfterValidator(_strip_versions)]
#: Same, where ``null`` marks a deleted property.
AppTwinChanges = Annotated[dict[str, MsgTwin | None], AfterValidator(_strip_versions_nullable)]


class BaseMessage(WireModel):
    """Every ``$hw/events`` body starts with these two fields (always written, even when empty)."""

    event_id: str = ""
    timestamp: int = 0


class TwinUpdateRequest(BaseMessage):
    """``twin/update`` from a mapper or app; ``twin`` maps property names to changes (``null`` deletes)."""

    twin: dict[str, MsgTwin | None] | None = None


class TwinUpdateResult(BaseMessage):
    """Success answer on ``twin/update/result``: the properties the update touched (``null`` = deleted)."""

    twin: AppTwinChanges


class ErrorResult(BaseMessage):
    """Error answer on any ``.../result`` topic; **[ext]** ``property`` names the property at fault."""

    code: int
    reason: str
    property: str | None = None


class TwinDelta(BaseMessage):
    """``twin/update/delta``: every live property, and each desired value that differs from the reported."""

    twin: AppTwins
    delta: dict[str, str]


class TwinDoc(WireModel):
    """One property's change in a document: state before (``null`` if new) and after (``null`` if deleted)."""

    _keep_null = frozenset({"last", "current"})

    last: MsgTwin | None = None
    current: MsgTwin | None = None


def _strip_doc_versions(twins: dict[str, TwinDoc]) -> dict[str, TwinDoc]:
    return {
        name: TwinDoc(
            last=None if doc.last is None else doc.last.without_versions(),
            current=None if doc.current is None else doc.current.without_versions(),
        )
        for name, doc in twins.items()
    }


class TwinDocument(BaseMessage):
    """``twin/update/document``: last and current state of each property a write changed."""

    twin: Annotated[dict[str, TwinDoc], AfterValidator(_strip_doc_versions)]


class TwinGetRequest(BaseMessage):
    """``twin/get``: ask for the device's twin."""


class TwinGetResult(BaseMessage):
    """``twin/get/result``: every live property of the device."""

    twin: AppTwins


class StateUpdateRequest(BaseMessage):
    """``state/update`` from a mapper: the device's connection / health state."""

    state: str = ""


class DeviceStateInfo(WireModel):
    """The ``device`` object of ``state/update/result``."""

    name: str
    state: str
    last_online_time: str | None = Field(default=None, alias="lastOnlineTime")


class StateUpdateResult(BaseMessage):
    """``state/update/result``: the state the edge recorded."""

    device: DeviceStateInfo


class AttributesUpdated(BaseMessage):
    """``updated``: attributes that changed (``null`` = removed)."""

    attributes: dict[str, MsgAttr | None]


class MembershipDevice(WireModel):
    """A device entry of the node's membership messages.

    **[ext]** ``spec`` (the v1beta1 DeviceSpec) and ``model`` (the DeviceModelSpec) let a mapper learn its
    devices' protocol configs over MQTT alone; they are free-form dicts here.
    """

    id: str
    name: str
    description: str | None = None
    state: str | None = None
    last_online: str | None = None
    attributes: dict[str, MsgAttr] | None = None
    twin: AppTwinChanges | None = None
    spec: dict[str, Any] | None = None
    model: dict[str, Any] | None = None


class MembershipGetRequest(BaseMessage):
    """``membership/get`` on the node topic."""


class MembershipGetResult(BaseMessage):
    """``membership/get/result``: every device bound to the node."""

    devices: list[MembershipDevice]


class MembershipUpdated(BaseMessage):
    """``membership/updated``: devices added to / removed from the node."""

    added_devices: list[MembershipDevice] = Field(default_factory=list)
    removed_devices: list[MembershipDevice] = Field(default_factory=list)


class TwinSync(BaseMessage):
    """Edge<->cloud twin content (``twin/edge_updated``, ``twin/cloud_updated``): twins **with** versions."""

    twin: dict[str, MsgTwin | None]
