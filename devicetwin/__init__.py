"""DeviceTwin: desired and reported device state, kept in SQLite and served over the EventBus."""

from devicetwin.cloud import CloudSink, CloudUpdateResult, state_update_resource, twin_edge_updated_resource
from devicetwin.devices import DeviceRecord, DeviceSnapshot, TwinDevice, TwinProperty
from devicetwin.errors import (
    DeviceNotFoundError,
    DeviceTwinError,
    TwinRequestError,
    TwinStoreError,
    TwinVersionConflictError,
)
from devicetwin.metrics import TwinMetrics
from devicetwin.service import DeviceTwin
from devicetwin.store import TwinStore
from devicetwin.wire import MAX_PAYLOAD

__all__ = [
    "MAX_PAYLOAD",
    "CloudSink",
    "CloudUpdateResult",
    "DeviceNotFoundError",
    "DeviceRecord",
    "DeviceSnapshot",
    "DeviceTwin",
    "DeviceTwinError",
    "TwinDevice",
    "TwinMetrics",
    "TwinProperty",
    "TwinRequestError",
    "TwinStore",
    "TwinStoreError",
    "TwinVersionConflictError",
    "state_update_resource",
    "twin_edge_updated_resource",
]
