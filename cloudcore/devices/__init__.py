"""The DeviceController: Device / DeviceModel CRs <-> edge twins, validation, coalesced status, Events."""

from cloudcore.devices.api import DeviceApi
from cloudcore.devices.controller import DESIRED_SYNCED, VALID_CONDITION, DeviceController, Send
from cloudcore.devices.messages import (
    EdgeStateReport,
    EdgeTwinReport,
    cloud_twin_message,
    is_device_resource,
    object_message,
    read_edge_message,
)
from cloudcore.devices.validation import Verdict, validate_device

__all__ = [
    "DESIRED_SYNCED",
    "VALID_CONDITION",
    "DeviceApi",
    "DeviceController",
    "EdgeStateReport",
    "EdgeTwinReport",
    "Send",
    "Verdict",
    "cloud_twin_message",
    "is_device_resource",
    "object_message",
    "read_edge_message",
    "validate_device",
]
