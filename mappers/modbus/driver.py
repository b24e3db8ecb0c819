"""The Modbus protocol plugin of the mapper SDK: TCP and RTU devices on pymodbus.

Reads are coalesced per device and table (:mod:`mappers.modbus.planner`); devices on one serial line, or on
one TCP endpoint, share its link and its lock (:mod:`mappers.modbus.link`). A Modbus exception response
becomes a :class:`~mappers.modbus.errors.ModbusExceptionError` on each property the request covered; a device
that does not answer (timeout, CRC or framing errors, closed connection) is unreachable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from device_models import ModbusProtocolConfig, ModbusRegister, ModbusVisitorConfig, ModelValidationError
from mappers.modbus.codec import Encoding
from mappers.modbus.errors import ModbusExceptionError, ValueDecodeError
from mappers.modbus.link import LinkSettings, ModbusLink, link_key
from mappers.modbus.planner import DEFAULT_BIT_GAP, DEFAULT_REGISTER_GAP, Block, Span, plan_reads
from mappers.sdk import (
    DeviceConfig,
    DeviceValue,
    MapperConfigError,
    PropertyConfig,
    PropertyError,
    Reading,
    RequestRecorder,
    ValueRefusedError,
    config_error,
)
from mappers.sdk.errors import ValueEncodeError

PROTOCOL_NAME = "modbus"
_ILLEGAL_DATA_ADDRESS = 2
_READ_FUNCTIONS = {
    ModbusRegister.COIL: "read_coils",
    ModbusRegister.DISCRETE_INPUT: "read_discrete_inputs",
    ModbusRegister.HOLDING: "read_holding_registers",
    ModbusRegister.INPUT: "read_input_registers",
}


@dataclass(frozen=True, slots=True)
class _Property:
    config: PropertyConfig
    visitor: ModbusVisitorConfig
    encoding: Encoding

    @property
    def span(self) -> Span:
        return Span(self.config.name, self.visitor.offset, self.encoding.count)


def _encoding(device: str, prop: PropertyConfig) -> _Property:
    visitor = prop.visitor
    where = f"spec.properties[name={prop.name}].visitors.configData"
    if not isinstance(visitor, ModbusVisitorConfig):
        raise MapperConfigError(device, where, visitor, "is not a Modbus visitor")
    try:
        encoding = Encoding.from_visitor(visitor, prop.model.type)
    except ModelValidationError as exc:
        raise config_error(device, exc.problems, within=where) from exc
    return _Property(prop, visitor, encoding)


class ModbusDriver:
    """Drives one Modbus device (one slave id on one link)."""

    def __init__(
        self, device: DeviceConfig, slave_id: int, link: ModbusLink, record_request: RequestRecorder
    ) -> None:
        self._device = device.id
        self._slave = slave_id
        self._link = link
        self._record = record_request
        self._properties = {prop.name: _encoding(device.id, prop) for prop in device.properties}
        self._open = False
        # Properties a device refused to read together with their neighbours (illegal data address).
        self._alone: set[str] = set()
        self._plans: dict[tuple[str, ...], list[tuple[ModbusRegister, Block]]] = {}
        self._last_properties: Sequence[PropertyConfig] = ()
        self._last_key: tuple[str, ...] = ()
        # Last registers of each planned block and what they decoded to: unchanged ones are not decoded again.
        self._decoded: dict[int, tuple[Block, list[int], dict[str, Reading]]] = {}

    async def connect(self) -> None:
        """Open the device's link (shared with the other devices on it)."""
        self._open = True
        await self._link.open(self, self._device)

    async def close(self) -> None:
        """Stop using the link; the last device on it closes it."""
        if self._open:
            self._open = False
            self._link.release(self)

    async def read_many(self, properties: Sequence[PropertyConfig]) -> Mapping[str, Reading]:
        """Read ``properties`` with one request per coalesced block."""
        readings: dict[str, Reading] = {}
        # The SDK passes the same sequence each cycle: skip building its key then.
        if properties is not self._last_properties:
            self._last_properties = properties
            self._last_key = tuple(prop.name for prop in properties)
        for table, block in self._plan(self._last_key):
            await self._read_block(table, block, readings)
        return readings

    def _plan(self, names: tuple[str, ...]) -> list[tuple[ModbusRegister, Block]]:
        plan = self._plans.get(names)
        if plan is None:
            plan = []
            for table in ModbusRegister:
                spans = [
                    self._properties[name].span
                    for name in sorted(names)
                    if self._properties[name].encoding.register is table
                ]
                gap = DEFAULT_BIT_GAP if table.is_bit else DEFAULT_REGISTER_GAP
                shared = [span for span in spans if span.key not in self._alone]
                alone = [Block(span.start, span.count, (span,)) for span in spans if span.key in self._alone]
                blocks = plan_reads(shared, max_count=table.max_per_read, max_gap=gap) + alone
                plan.extend((table, block) for block in sorted(blocks, key=lambda b: b.start))
            self._plans[names] = plan
        return plan

    async def _read_block(self, table: ModbusRegister, block: Block, readings: dict[str, Reading]) -> None:
        response = await self._link.request(self._device, self._reader(table, block), self._record)
        if response.isError():
            code = getattr(response, "exception_code", 0)
            if code == _ILLEGAL_DATA_ADDRESS and len(block.spans) > 1:
                # A bridged gap (or a neighbour) is not readable on this device: read these alone from now on.
                self._alone.update(span.key for span in block.spans)
                self._plans.clear()
                for span in block.spans:
                    await self._read_block(table, Block(span.start, span.count, (span,)), readings)
                return
            for span in block.spans:
                readings[span.key] = ModbusExceptionError(
                    self._device, span.key, response.function_code, code
                )
            return
        data: list[int] = response.bits[: block.count] if table.is_bit else response.registers
        cached = self._decoded.get(id(block))
        if cached is not None and cached[0] is block and cached[1] == data:
            readings.update(cached[2])
            return
        decoded: dict[str, Reading] = {}
        for span in block.spans:
            try:
                decoded[span.key] = self._properties[span.key].encoding.decode(data[block.slice_of(span)])
            except ValueDecodeError as exc:
                decoded[span.key] = PropertyError(self._device, span.key, f"cannot decode {exc}")
        self._decoded[id(block)] = (block, data, decoded)
        readings.update(decoded)

    def _reader(self, table: ModbusRegister, block: Block) -> Any:
        name, slave = _READ_FUNCTIONS[table], self._slave
        return lambda client: getattr(client, name)(block.start, count=block.count, device_id=slave)

    async def write_one(self, prop: PropertyConfig, value: DeviceValue) -> None:
        """Encode ``value`` and write it with one request (coil, register or registers)."""
        known = self._properties[prop.name]
        table = known.encoding.register
        if not table.writable:
            raise ValueRefusedError(self._device, prop.name, value, f"a {table.value} cannot be written")
        self._check_visitor_range(known, value)
        try:
            words = known.encoding.encode(value)
        except ValueEncodeError as exc:
            raise ValueRefusedError(self._device, prop.name, value, exc.reason) from exc
        offset, slave = known.visitor.offset, self._slave
        if table is ModbusRegister.COIL:
            call: Any = lambda client: client.write_coil(offset, bool(words[0]), device_id=slave)  # noqa: E731
        elif len(words) == 1:
            call = lambda client: client.write_register(offset, words[0], device_id=slave)  # noqa: E731
        else:
            call = lambda client: client.write_registers(offset, list(words), device_id=slave)  # noqa: E731
        response = await self._link.request(self._device, call, self._record)
        if response.isError():
            code = getattr(response, "exception_code", 0)
            raise ModbusExceptionError(self._device, prop.name, response.function_code, code)

    def _check_visitor_range(self, prop: _Property, value: DeviceValue) -> None:
        if isinstance(value, (str, bytes, bool)):
            return
        low, high = prop.visitor.minimum, prop.visitor.maximum
        if low is not None and value < low:
            raise ValueRefusedError(
                self._device, prop.config.name, value, f"is below the visitor's min {low:g}"
            )
        if high is not None and value > high:
            raise ValueRefusedError(
                self._device, prop.config.name, value, f"is above the visitor's max {high:g}"
            )


class ModbusProtocol:
    """The ``modbus`` protocol: builds drivers, and owns the links they share."""

    def __init__(self, settings: LinkSettings | None = None) -> None:
        self._settings = settings or LinkSettings()
        self._links: dict[tuple[str, str, int], ModbusLink] = {}

    @property
    def name(self) -> str:
        """``protocolName`` of the devices this plugin drives."""
        return PROTOCOL_NAME

    def create_driver(self, device: DeviceConfig, record_request: RequestRecorder) -> ModbusDriver:
        """A driver for ``device``; raises :class:`MapperConfigError` naming the field to fix."""
        config = device.protocol
        if not isinstance(config, ModbusProtocolConfig):
            raise MapperConfigError(
                device.id, "spec.protocol.protocolName", type(config).__name__, "is not modbus"
            )
        # Links live as long as the plugin, so every driver of one serial port or endpoint shares one client.
        link = self._links.get(link_key(config))
        if link is None:
            link = self._links[link_key(config)] = ModbusLink(config, self._settings)
        else:
            conflict = link.admit(config)
            if conflict:
                raise MapperConfigError(device.id, "spec.protocol.configData", config.serial_port, conflict)
        return ModbusDriver(device, config.slave_id, link, record_request)
