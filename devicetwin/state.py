"""The twin state machine: pure functions from a device and a change to the device after it.

Each function takes a :class:`DeviceSnapshot` and returns the snapshot after the change, the store writes that
make it durable, and what to tell apps and the cloud. Nothing here does I/O; a refused change raises and
leaves the device as it was (a request is applied whole or not at all).

The rules are KubeEdge's (``edge/pkg/devicetwin/dtmanager/twin.go``, CONTRACTS.md §1):

* an edge write (MQTT ``twin/update``) bumps the ``edge`` version of each side (expected / actual) it writes;
* a new property is added (``optional`` true and type ``string`` unless given); ``null`` soft-deletes an
  optional property (type ``deleted``, versions kept); ``optional`` only goes from true to false;
* the type of a live property is fixed (a request's ``metadata.type`` is ignored for it) and every value
  written must parse as that type;
* a cloud update carries versions and is refused for a property whose local ``cloud`` version is newer, or
  whose local ``edge`` version is newer than the request's (edge wins: its twin goes back to the cloud).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from device_models import (
    DELETED_TYPE,
    DEVICE_STATES,
    MsgAttr,
    MsgTwin,
    TwinDoc,
    TwinValidationError,
    TwinValue,
    TwinVersion,
    TypeMetadata,
    ValueMetadata,
    validate_property_name,
    validate_value,
    validate_value_type,
)
from devicetwin.devices import DeviceRecord, DeviceSnapshot, TwinDevice
from devicetwin.errors import TwinRequestError, TwinVersionConflictError
from devicetwin.store import DeleteAttr, PutAttr, PutDevice, PutTwin, WriteOp

#: States in which a device counts as online (its ``lastOnlineTime`` moves to now).
ONLINE_STATES = frozenset({"online", "ok"})


@dataclass(frozen=True)
class TwinChange:
    """The outcome of a twin write.

    ``result``: what the write touched, for the app (``None`` = deleted); ``document``: last/current state of
    each changed property; ``sync``: what goes to the cloud (with versions) — the edge's writes after an edge
    update, the edge's twins that won over a refused cloud update otherwise.
    """

    device: DeviceSnapshot
    writes: tuple[WriteOp, ...]
    document: dict[str, TwinDoc]
    result: dict[str, MsgTwin | None] = field(default_factory=dict)
    sync: dict[str, MsgTwin | None] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Declaration:
    """The outcome of declaring a device (edgecore / the cloud side adding or updating it)."""

    change: TwinChange
    is_new: bool
    #: The device's membership entry changed (new, description, attributes, spec or model).
    membership_changed: bool
    #: Attributes that changed (``None`` = removed), for the ``updated`` message.
    attributes: dict[str, MsgAttr | None]


def check_update_request(changes: Mapping[str, MsgTwin | None]) -> None:
    """Check property names and value characters of a ``twin/update`` before anything else (400 if bad)."""
    for name, twin in changes.items():
        validate_property_name(name)
        if twin is None:
            continue
        for side in (twin.expected, twin.actual):
            if side is not None and side.value is not None:
                # As a string: characters only; the value's type is checked against the stored property.
                validate_value(name, "string", side.value)


def apply_edge_update(device: DeviceSnapshot, changes: Mapping[str, MsgTwin | None], now: int) -> TwinChange:
    """Apply a ``twin/update`` from a mapper or app; raises :class:`TwinValidationError` (400) if refused."""
    twins = dict(device.twins)
    result: dict[str, MsgTwin | None] = {}
    document: dict[str, TwinDoc] = {}
    sync: dict[str, MsgTwin | None] = {}
    for name, request in changes.items():
        validate_property_name(name)
        old = twins.get(name)
        if request is None:
            deleted = _edge_delete(name, old)
            if deleted is None:
                continue
            twins[name] = sync[name] = deleted
            result[name] = None
            document[name] = TwinDoc(last=old, current=None)
        elif old is None or old.is_deleted:
            added = _edge_add(name, request, old, now)
            twins[name] = result[name] = sync[name] = added
            document[name] = TwinDoc(last=None, current=added)
        else:
            compared = _edge_compare(name, old, request, now)
            if compared is None:
                continue
            twins[name], touched = compared
            result[name] = sync[name] = touched
            document[name] = TwinDoc(last=old, current=twins[name])
    return _change(device, twins, document, result=result, sync=sync)


def apply_cloud_update(device: DeviceSnapshot, changes: Mapping[str, MsgTwin | None], now: int) -> TwinChange:
    """Apply a twin sync from the cloud (with versions), property by property.

    A refused property is listed in ``rejected`` with the reason; when the edge holds a newer twin, that twin
    is in ``sync`` to be sent back to the cloud.
    """
    twins = dict(device.twins)
    document: dict[str, TwinDoc] = {}
    sync: dict[str, MsgTwin | None] = {}
    rejected: dict[str, str] = {}
    for name, request in changes.items():
        old = twins.get(name)
        try:
            new = _cloud_apply(name, old, request, now)
        except TwinVersionConflictError as exc:
            rejected[name] = exc.reason
            if old is not None:
                sync[name] = old
            continue
        except TwinValidationError as exc:
            rejected[name] = exc.reason
            continue
        if new is None:
            continue
        twins[name] = new
        last = None if old is None or old.is_deleted else old
        document[name] = TwinDoc(last=last, current=None if new.is_deleted else new)
    return _change(device, twins, document, sync=sync, rejected=rejected)


def declare_device(old: DeviceSnapshot | None, device: TwinDevice, now: int) -> Declaration:
    """Add or update a device as declared by edgecore; raises :class:`TwinValidationError` if it is invalid.

    Declared properties get their type and ``optional`` as given and, when ``expected`` is set and differs,
    that desired value (a cloud-side write: the ``cloud`` version of ``expected`` goes up by one). Properties
    not declared are left as they are. Attributes are replaced by the declared set.
    """
    record = DeviceRecord(
        id=device.id,
        name=device.name,
        description=device.description,
        state=old.record.state if old else "",
        last_online=old.record.last_online if old else "",
        spec=dict(device.spec) if device.spec is not None else None,
        model=dict(device.model) if device.model is not None else None,
    )
    attributes = {
        name: MsgAttr(value=value, optional=True, metadata=TypeMetadata(type="string"))
        for name, value in device.attributes.items()
    }
    for name in attributes:
        validate_property_name(name)
    base = old or DeviceSnapshot(record)
    attr_changes: dict[str, MsgAttr | None] = {
        name: attr for name, attr in attributes.items() if base.attributes.get(name) != attr
    }
    attr_changes.update((name, None) for name in base.attributes if name not in attributes)

    twins = dict(base.twins)
    document: dict[str, TwinDoc] = {}
    for prop in device.properties:
        if prop.name in document:
            raise TwinValidationError(prop.name, None, "the property is declared twice")
        validate_property_name(prop.name)
        value_type = prop.type.lower()
        validate_value_type(prop.name, value_type)
        if prop.expected is not None:
            validate_value(prop.name, value_type, prop.expected)
        current = twins.get(prop.name)
        live = current if current is not None and not current.is_deleted else None
        new = _declared_twin(live, current, prop.expected, prop.optional, value_type, now)
        if new != current:
            twins[prop.name] = new
            document[prop.name] = TwinDoc(last=live, current=new)

    writes: list[WriteOp] = []
    if old is None or record != old.record:
        writes.append(PutDevice(record))
    for name, attr in attr_changes.items():
        writes.append(DeleteAttr(device.id, name) if attr is None else PutAttr(device.id, name, attr))
    after = DeviceSnapshot(record, attributes, base.twins)
    change = _change(after, twins, document, extra_writes=tuple(writes))
    membership_changed = old is None or (
        (old.record.description, old.record.spec, old.record.model, dict(old.attributes))
        != (record.description, record.spec, record.model, attributes)
    )
    return Declaration(change, old is None, membership_changed, attr_changes)


def apply_state(device: DeviceSnapshot, state: str, now: float | None = None) -> DeviceSnapshot:
    """The device after a ``state/update``; raises :class:`TwinRequestError` (400) for an unknown state."""
    if state not in DEVICE_STATES:
        allowed = ", ".join(sorted(DEVICE_STATES))
        raise TwinRequestError(f"unknown device state {state!r}; expected one of {allowed}")
    last_online = device.record.last_online
    if state in ONLINE_STATES:
        last_online = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    return replace(device, record=replace(device.record, state=state, last_online=last_online))


def delta_of(device: DeviceSnapshot) -> dict[str, str]:
    """Desired values that differ from the reported ones (or have none reported), by property."""
    return {
        name: twin.expected_value
        for name, twin in device.live_twins().items()
        if twin.expected_value and twin.expected_value != twin.actual_value
    }


def _change(
    device: DeviceSnapshot,
    twins: dict[str, MsgTwin],
    document: dict[str, TwinDoc],
    *,
    result: dict[str, MsgTwin | None] | None = None,
    sync: dict[str, MsgTwin | None] | None = None,
    rejected: dict[str, str] | None = None,
    extra_writes: tuple[WriteOp, ...] = (),
) -> TwinChange:
    writes = extra_writes + tuple(PutTwin(device.id, name, twins[name]) for name in document)
    return TwinChange(
        device=replace(device, twins=twins),
        writes=writes,
        document=document,
        result=result or {},
        sync=sync or {},
        rejected=rejected or {},
    )


def _stamped(prop: str, value_type: str, side: TwinValue | None, now: int, which: str) -> TwinValue | None:
    """The value to store for one side of a request (validated, timestamped), or None if not given."""
    if side is None:
        return None
    if side.value is None:
        raise TwinValidationError(prop, None, f"{which}.value must be a string")
    validate_value(prop, value_type, side.value)
    return TwinValue(value=side.value, metadata=ValueMetadata(timestamp=now))


def _bump_edge(version: TwinVersion | None) -> TwinVersion:
    version = version or TwinVersion()
    return TwinVersion(cloud=version.cloud, edge=version.edge + 1)


def _edge_delete(name: str, old: MsgTwin | None) -> MsgTwin | None:
    """The soft-deleted twin, or None when it is deleted already."""
    if old is None:
        raise TwinValidationError(name, None, "cannot delete a property that does not exist")
    if old.is_deleted:
        return None
    if old.optional is False:
        raise TwinValidationError(name, None, "the property is not optional: it cannot be deleted")
    return MsgTwin(
        optional=old.optional,
        metadata=TypeMetadata(type=DELETED_TYPE),
        expected_version=_bump_edge(old.expected_version),
        actual_version=_bump_edge(old.actual_version),
    )


def _edge_add(name: str, request: MsgTwin, old: MsgTwin | None, now: int) -> MsgTwin:
    """A new property (or a deleted one coming back), versions continuing from the deleted one's."""
    value_type = request.value_type
    validate_value_type(name, value_type)
    expected = _stamped(name, value_type, request.expected, now, "expected")
    actual = _stamped(name, value_type, request.actual, now, "actual")
    expected_version = old.expected_version if old and old.expected_version else TwinVersion()
    actual_version = old.actual_version if old and old.actual_version else TwinVersion()
    return MsgTwin(
        expected=expected,
        actual=actual,
        optional=True if request.optional is None else request.optional,
        metadata=TypeMetadata(type=value_type),
        expected_version=_bump_edge(expected_version) if expected else expected_version,
        actual_version=_bump_edge(actual_version) if actual else actual_version,
    )


def _edge_compare(name: str, old: MsgTwin, request: MsgTwin, now: int) -> tuple[MsgTwin, MsgTwin] | None:
    """(new twin, what was touched) for an update of a live property; None when nothing changes."""
    value_type = old.value_type
    expected = _stamped(name, value_type, request.expected, now, "expected")
    actual = _stamped(name, value_type, request.actual, now, "actual")
    optional_off = request.optional is False and old.optional is not False
    if expected is None and actual is None and not optional_off:
        return None
    new = MsgTwin(
        expected=expected or old.expected,
        actual=actual or old.actual,
        optional=False if optional_off else old.optional,
        metadata=old.metadata,
        expected_version=_bump_edge(old.expected_version) if expected else old.expected_version,
        actual_version=_bump_edge(old.actual_version) if actual else old.actual_version,
    )
    touched = MsgTwin(
        expected=expected,
        actual=actual,
        optional=new.optional,
        metadata=new.metadata,
        expected_version=new.expected_version if expected else None,
        actual_version=new.actual_version if actual else None,
    )
    return new, touched


def _check_version(prop: str, local: TwinVersion | None, request: TwinVersion | None) -> None:
    if request is None:
        raise TwinVersionConflictError(prop, "a cloud update must carry versions")
    local = local or TwinVersion()
    if local.cloud > request.cloud:
        raise TwinVersionConflictError(
            prop, f"the edge holds cloud version {local.cloud}, newer than the update's {request.cloud}"
        )
    if local.edge > request.edge:
        raise TwinVersionConflictError(
            prop,
            f"the edge holds edge version {local.edge}, newer than the update's {request.edge} (edge wins)",
        )


def _cloud_apply(name: str, old: MsgTwin | None, request: MsgTwin | None, now: int) -> MsgTwin | None:
    """The twin after one property of a cloud update; None when nothing changes."""
    validate_property_name(name)
    if request is None:
        raise TwinValidationError(name, None, "a cloud update must give the property's twin")
    if request.is_deleted:
        if old is None:
            # Keep the deletion (and its versions) so that an older cloud update cannot bring it back.
            return MsgTwin(
                optional=True if request.optional is None else request.optional,
                metadata=TypeMetadata(type=DELETED_TYPE),
                expected_version=request.expected_version or TwinVersion(),
                actual_version=request.actual_version or TwinVersion(),
            )
        if old.is_deleted:
            return None
        # A deletion without versions is the cloud's last word (KubeEdge's SyncTwinDeleteDealType).
        if request.expected_version is not None:
            _check_version(name, old.expected_version, request.expected_version)
        if request.actual_version is not None:
            _check_version(name, old.actual_version, request.actual_version)
        return MsgTwin(
            optional=old.optional,
            metadata=TypeMetadata(type=DELETED_TYPE),
            expected_version=request.expected_version or old.expected_version,
            actual_version=request.actual_version or old.actual_version,
        )
    live = old if old is not None and not old.is_deleted else None
    value_type = live.value_type if live else request.value_type
    validate_value_type(name, value_type)
    expected = _stamped(name, value_type, request.expected, now, "expected")
    actual = _stamped(name, value_type, request.actual, now, "actual")
    if expected is not None:
        _check_version(name, old.expected_version if old else None, request.expected_version)
    if actual is not None:
        _check_version(name, old.actual_version if old else None, request.actual_version)
    if live is None:
        optional = True if request.optional is None else request.optional
    else:
        optional = request.optional is not False and live.optional is not False
        if expected is None and actual is None and optional == (live.optional is not False):
            return None
    return MsgTwin(
        expected=expected or (live.expected if live else None),
        actual=actual or (live.actual if live else None),
        optional=optional,
        metadata=TypeMetadata(type=value_type),
        expected_version=_synced_version(
            expected, request.expected_version, old.expected_version if old else None
        ),
        actual_version=_synced_version(actual, request.actual_version, old.actual_version if old else None),
    )


def _synced_version(
    written: TwinValue | None, request: TwinVersion | None, local: TwinVersion | None
) -> TwinVersion:
    """A side written by the cloud takes the request's version; an untouched side keeps its own."""
    if written is not None and request is not None:
        return request
    return local or TwinVersion()


def _declared_twin(
    live: MsgTwin | None,
    current: MsgTwin | None,
    expected: str | None,
    optional: bool,
    value_type: str,
    now: int,
) -> MsgTwin:
    """A declared property: type and optional as declared, desired value set if given and different."""
    expected_changed = expected is not None and (live is None or live.expected_value != expected)
    expected_version = current.expected_version if current and current.expected_version else TwinVersion()
    if expected_changed:
        expected_version = TwinVersion(cloud=expected_version.cloud + 1, edge=expected_version.edge)
    return MsgTwin(
        expected=(
            TwinValue(value=expected, metadata=ValueMetadata(timestamp=now))
            if expected_changed
            else (live.expected if live else None)
        ),
        actual=live.actual if live else None,
        optional=optional,
        metadata=TypeMetadata(type=value_type),
        expected_version=expected_version,
        actual_version=current.actual_version if current and current.actual_version else TwinVersion(),
    )
