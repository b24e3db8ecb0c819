"""Errors of the BLE mapper, under the SDK's hierarchy; bleak's exceptions stop at the driver."""

from __future__ import annotations

from mappers.sdk.errors import DeviceResponseError, MapperError


class ValueDecodeError(MapperError):
    """A characteristic value the property's conversion cannot read (too short for the converter's indices,
    not UTF-8 for a STRING property)."""

    def __init__(self, data: bytes, reason: str) -> None:
        self.data = data
        self.reason = reason
        super().__init__(f"{data.hex() or 'empty value'}: {reason}")


class CharacteristicNotFoundError(DeviceResponseError):
    """The device has no characteristic with the property's ``characteristicUUID``."""

    def __init__(self, device: str, property: str, uuid: str) -> None:
        self.uuid = uuid
        super().__init__(
            device,
            property,
            f"the device has no characteristic {uuid} (visitors.configData.characteristicUUID); "
            "`edgetwin mapper ble gatt ADDRESS` lists the ones it has",
        )


class AdapterError(MapperError):
    """The Bluetooth adapter cannot be used (missing, powered off, BlueZ not running)."""

    def __init__(self, adapter: str, reason: str) -> None:
        self.adapter = adapter
        self.reason = reason
        super().__init__(f"adapter {adapter}: {reason}")
