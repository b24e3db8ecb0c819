"""The BLE mapper: bleak connections (BlueZ), KubeEdge's data converter, notifications, scan, GATT listing."""

from mappers.ble.converter import convert, decode, encode
from mappers.ble.driver import BLE_ERRORS, PROTOCOL_NAME, BleDriver, BleProtocol, BleSettings
from mappers.ble.errors import AdapterError, CharacteristicNotFoundError, ValueDecodeError
from mappers.ble.finder import Advertised, DeviceFinder
from mappers.ble.gatt import GattRow, gatt_table, list_gatt, scan_table

__all__ = [
    "BLE_ERRORS",
    "PROTOCOL_NAME",
    "AdapterError",
    "Advertised",
    "BleDriver",
    "BleProtocol",
    "BleSettings",
    "CharacteristicNotFoundError",
    "DeviceFinder",
    "GattRow",
    "ValueDecodeError",
    "convert",
    "decode",
    "encode",
    "gatt_table",
    "list_gatt",
    "scan_table",
]
