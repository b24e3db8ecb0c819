"""Errors of the OPC-UA mapper, under the SDK's hierarchy; asyncua's exceptions stop at the driver."""

from __future__ import annotations

from pathlib import Path

from mappers.sdk.errors import DeviceResponseError, MapperError, ValueRefusedError


class CertificateError(MapperError):
    """A certificate or private key file cannot be used (missing, unreadable, no application URI)."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class ValueDecodeError(MapperError):
    """A node value that a twin cannot hold: an array, a null, a structure or another non-scalar type."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class OpcUaStatusError(DeviceResponseError):
    """The server answered a request on this property with a Bad status code (``status`` is its name)."""

    def __init__(self, device: str, property: str, status: str, code: int, what: str = "read") -> None:
        self.status = status
        self.code = code
        super().__init__(device, property, f"{what} answered {status} (0x{code:08X})")


class WriteRefusedError(ValueRefusedError):
    """The server refused to write a value (BadNotWritable, BadTypeMismatch, BadUserAccessDenied, ...)."""

    def __init__(self, device: str, property: str, value: object, status: str, code: int, hint: str) -> None:
        super().__init__(device, property, value, f"the server answered {status}: {hint}")
        self.status = status
        self.code = code
