"""The errors of the device twin; each knows the code it is answered with on a ``.../result`` topic."""

from __future__ import annotations

from typing import ClassVar

from device_models import EdgetwinError

BAD_REQUEST = 400
NOT_FOUND = 404
INTERNAL_ERROR = 500


class DeviceTwinError(EdgetwinError):
    """Root of the device twin's errors; ``code`` is the code of the error result sent to the app."""

    code: ClassVar[int] = INTERNAL_ERROR


class TwinRequestError(DeviceTwinError):
    """A request the twin refuses as it is (unparsable, wrong shape, bad value, version conflict): 400.

    ``property`` names the property at fault when there is one; the app fixes the request, retrying the same
    one cannot work.
    """

    code = BAD_REQUEST

    def __init__(self, reason: str, *, prop: str | None = None) -> None:
        super().__init__(reason if prop is None else f"property {prop!r}: {reason}")
        self.reason = reason
        self.property = prop


class DeviceNotFoundError(DeviceTwinError):
    """The device is not bound to this node (never added, or removed): 404."""

    code = NOT_FOUND

    def __init__(self, device_id: str) -> None:
        super().__init__(f"device {device_id!r} is not known to this node")
        self.device_id = device_id


class TwinStoreError(DeviceTwinError):
    """The SQLite store failed (or is closed): 500. Nothing of the failed write was kept or published."""

    code = INTERNAL_ERROR

    def __init__(self, operation: str, reason: str) -> None:
        super().__init__(f"twin store {operation} failed: {reason}")
        self.operation = operation
        self.reason = reason


class TwinVersionConflictError(TwinRequestError):
    """A cloud update older than the edge's twin (cloud or edge version newer locally): refused, 400.

    The edge wins: its value and versions are sent back to the cloud.
    """

    def __init__(self, prop: str, reason: str) -> None:
        super().__init__(reason, prop=prop)
