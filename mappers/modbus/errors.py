"""Errors of the Modbus mapper: values the codec cannot lay out, and Modbus exception responses."""

from __future__ import annotations

from mappers.sdk.errors import DeviceResponseError, MapperError

# Exception codes of the Modbus application protocol v1.1b3, section 7.
EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


class ValueDecodeError(MapperError):
    """Register contents that do not form a value of the property's type (e.g. invalid UTF-8)."""

    def __init__(self, data: bytes, reason: str) -> None:
        self.data = data
        self.reason = reason
        super().__init__(f"{data.hex()}: {reason}")


class ModbusExceptionError(DeviceResponseError):
    """The device answered with a Modbus exception response (illegal address, device busy, ...)."""

    def __init__(self, device: str, property: str, function_code: int, exception_code: int) -> None:
        self.function_code = function_code
        self.exception_code = exception_code
        name = EXCEPTION_NAMES.get(exception_code, "unknown exception")
        super().__init__(
            device, property, f"Modbus exception {exception_code} ({name}) to function {function_code & 0x7F}"
        )
