"""The Modbus mapper: TCP and RTU devices on pymodbus, plugged into the mapper SDK."""

from mappers.modbus.codec import Encoding, ModbusValue
from mappers.modbus.driver import PROTOCOL_NAME, ModbusDriver, ModbusProtocol
from mappers.modbus.errors import (
    ModbusExceptionError,
    ValueDecodeError,
)
from mappers.modbus.link import LinkSettings
from mappers.modbus.planner import DEFAULT_BIT_GAP, DEFAULT_REGISTER_GAP, Block, Span, plan_reads

__all__ = [
    "DEFAULT_BIT_GAP",
    "DEFAULT_REGISTER_GAP",
    "PROTOCOL_NAME",
    "Block",
    "Encoding",
    "LinkSettings",
    "ModbusDriver",
    "ModbusExceptionError",
    "ModbusProtocol",
    "ModbusValue",
    "Span",
    "ValueDecodeError",
    "plan_reads",
]
