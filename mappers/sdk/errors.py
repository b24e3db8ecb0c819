"""The mapper SDK's exceptions: one hierarchy under :class:`MapperError`, leaves that carry their data.

What happens next depends on the class, not on the message:

* :class:`MapperConfigError` is permanent: the device (or property) is not driven until its YAML is fixed;
  the message names the field to fix.
* :class:`DeviceUnreachableError` is temporary: the device goes ``offline`` and the SDK reconnects with
  exponential backoff and jitter.
* :class:`DeviceRejectedError` says the device answers but refuses the mapper (credentials, certificate,
  security settings): the device goes ``unhealthy`` and is retried only at the backoff's longest delay, since
  the fix (a corrected Device, a certificate trusted on the device) happens outside the mapper.
* :class:`PropertyError` leaves concern one property of a device that answers: the reading is skipped (logged,
  counted) and the device goes ``unhealthy`` (:class:`DeviceResponseError`), or a desired value is refused
  (:class:`ValueRefusedError`) and the device is left untouched.
"""

from __future__ import annotations

from device_models import EdgetwinError


class MapperError(EdgetwinError):
    """Root of every error a mapper raises on purpose."""


class MapperConfigError(MapperError):
    """A device's protocol or visitor configuration cannot be driven; not retried."""

    def __init__(self, device: str, field: str, value: object, reason: str) -> None:
        self.device = device
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"device {device}: {field}: {value!r}: {reason}")


class DeviceUnreachableError(MapperError):
    """The device (or its bus) cannot be reached: connection refused, closed or no answer in time."""

    def __init__(self, device: str, reason: str) -> None:
        self.device = device
        self.reason = reason
        super().__init__(f"device {device} unreachable: {reason}")


class DeviceRejectedError(MapperError):
    """The device refused the mapper's connection; ``field`` names the configData field to check, if one."""

    def __init__(self, device: str, field: str | None, reason: str) -> None:
        self.device = device
        self.field = field
        self.reason = reason
        where = f" (field {field})" if field else ""
        super().__init__(f"device {device} refused the connection: {reason}{where}")


class PropertyError(MapperError):
    """Something went wrong with one property of one device."""

    def __init__(self, device: str, property: str, reason: str) -> None:
        self.device = device
        self.property = property
        self.reason = reason
        super().__init__(f"device {device} property {property}: {reason}")


class DeviceResponseError(PropertyError):
    """The device answered a request on this property with an error (e.g. a Modbus exception response)."""


class ValueRefusedError(PropertyError):
    """A value cannot be written to this property (access mode, type, range, encoding); nothing is written."""

    def __init__(self, device: str, property: str, value: object, reason: str) -> None:
        super().__init__(device, property, f"value {value!r} refused: {reason}")
        self.value = value
        self.reason = reason


class ValueEncodeError(MapperError):
    """A value the device's representation cannot hold (type, width after scaling, range, length).

    Raised by a protocol's codec; the driver turns it into a refusal naming the property.
    """

    def __init__(self, value: object, reason: str) -> None:
        self.value = value
        self.reason = reason
        super().__init__(f"{value!r}: {reason}")
