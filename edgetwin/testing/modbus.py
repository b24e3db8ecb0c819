"""Simulated Modbus devices on a real pymodbus 3.16 server: TCP on a free port, RTU over a socat pty pair.

Each simulator serves one or more slave ids, each with the four tables — coils, discrete inputs, holding
registers, input registers — of ``size`` entries from address 0. A test reads and sets them directly
(``await sim.set_holding(1, 0, [215])``, ``await sim.get_coils(1, 0, 8)``). :meth:`stop` takes the device off
the line (a dead device: TCP connections refused, RTU requests unanswered) and keeps its values;
:meth:`start` brings it back with them.

Requests for a slave id the simulator does not serve get pymodbus' exception response (device failure).
"""

from __future__ import annotations

import abc
import enum
import os
import shutil
import subprocess
import termios
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edgetwin.testing.ports import free_port
from edgetwin.testing.waiting import WaitTimeout, wait_for

__all__ = ["ModbusRtuSimulator", "ModbusSimulator", "ModbusTable", "ModbusTcpSimulator"]


class ModbusTable(enum.Enum):
    """The four Modbus tables; the value is the read function code, which also addresses the datastore."""

    COILS = 1
    DISCRETE_INPUTS = 2
    HOLDING_REGISTERS = 3
    INPUT_REGISTERS = 4

    @property
    def is_bits(self) -> bool:
        """Coils and discrete inputs hold bits; the registers hold 16-bit words."""
        return self in (ModbusTable.COILS, ModbusTable.DISCRETE_INPUTS)


Values = list[bool] | list[int]
_PARITY_NAMES = {"N": "none", "E": "even", "O": "odd"}


class ModbusSimulator(abc.ABC):
    """Base of the TCP and RTU simulators: the tables, their direct access, start / stop."""

    def __init__(self, slave_ids: Sequence[int] = (1,), *, size: int = 128) -> None:
        if not slave_ids:
            raise ValueError("a simulator serves at least one slave id")
        if size < 16 or size % 16:
            raise ValueError(f"size must be a positive multiple of 16, not {size}")
        self.slave_ids = tuple(slave_ids)
        self.size = size
        # The values while stopped; while running the server's datastore holds them.
        self._tables: dict[int, dict[ModbusTable, Values]] = {
            slave: {table: [False] * size if table.is_bits else [0] * size for table in ModbusTable}
            for slave in self.slave_ids
        }
        self._server: ModbusTcpServer | ModbusSerialServer | None = None

    @property
    def running(self) -> bool:
        """True while the device answers."""
        return self._server is not None

    async def start(self) -> None:
        """Put the device on the line (again), with the values it had."""
        if self._server is not None:
            return
        devices = [self._device(slave) for slave in self.slave_ids]
        server = await self._serve(devices)
        self._server = server

    async def stop(self) -> None:
        """Take the device off the line, keeping its values; idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        for slave in self.slave_ids:
            for table in ModbusTable:
                self._tables[slave][table] = await server.async_getValues(slave, table.value, 0, self.size)
        await server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus leaves it unannotated

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def get(self, table: ModbusTable, slave: int, address: int, count: int = 1) -> Values:
        """Read ``count`` values of ``table`` from ``address`` directly (running or not)."""
        self._check(slave, address, count)
        if self._server is not None:
            values: Values = await self._server.async_getValues(slave, table.value, address, count)
            return values
        return self._tables[slave][table][address : address + count]

    async def set(
        self, table: ModbusTable, slave: int, address: int, values: Sequence[bool] | Sequence[int]
    ) -> None:
        """Write ``values`` to ``table`` from ``address`` directly (running or not)."""
        self._check(slave, address, len(values))
        if table.is_bits:
            new: Values = [bool(value) for value in values]
        else:
            if not all(0 <= int(value) <= 0xFFFF for value in values):
                raise ValueError(f"register values must be 0..65535, got {list(values)}")
            new = [int(value) for value in values]
        if self._server is not None:
            await self._server.async_setValues(slave, table.value, address, new)
        else:
            # Both sides hold the same kind (bits or words); mypy cannot see it through the union.
            self._tables[slave][table][address : address + len(new)] = new  # type: ignore[assignment]

    async def get_coils(self, slave: int, address: int, count: int = 1) -> list[bool]:
        """Coils ``address .. address+count-1`` of ``slave``."""
        return [bool(value) for value in await self.get(ModbusTable.COILS, slave, address, count)]

    async def set_coils(self, slave: int, address: int, values: Sequence[bool]) -> None:
        """Set coils from ``address``."""
        await self.set(ModbusTable.COILS, slave, address, values)

    async def get_discrete(self, slave: int, address: int, count: int = 1) -> list[bool]:
        """Discrete inputs ``address .. address+count-1`` of ``slave``."""
        return [bool(value) for value in await self.get(ModbusTable.DISCRETE_INPUTS, slave, address, count)]

    async def set_discrete(self, slave: int, address: int, values: Sequence[bool]) -> None:
        """Set discrete inputs from ``address`` (read-only on the wire, writable here)."""
        await self.set(ModbusTable.DISCRETE_INPUTS, slave, address, values)

    async def get_holding(self, slave: int, address: int, count: int = 1) -> list[int]:
        """Holding registers ``address .. address+count-1`` of ``slave``."""
        return [int(value) for value in await self.get(ModbusTable.HOLDING_REGISTERS, slave, address, count)]

    async def set_holding(self, slave: int, address: int, values: Sequence[int]) -> None:
        """Set holding registers from ``address``."""
        await self.set(ModbusTable.HOLDING_REGISTERS, slave, address, values)

    async def get_inputs(self, slave: int, address: int, count: int = 1) -> list[int]:
        """Input registers ``address .. address+count-1`` of ``slave``."""
        return [int(value) for value in await self.get(ModbusTable.INPUT_REGISTERS, slave, address, count)]

    async def set_inputs(self, slave: int, address: int, values: Sequence[int]) -> None:
        """Set input registers from ``address`` (read-only on the wire, writable here)."""
        await self.set(ModbusTable.INPUT_REGISTERS, slave, address, values)

    @abc.abstractmethod
    def config_data(self, slave: int) -> dict[str, Any]:
        """The Device's ``spec.protocol.configData`` (KubeEdge v1beta1 Modbus) addressing ``slave`` here."""

    def _check(self, slave: int, address: int, count: int) -> None:
        if slave not in self._tables:
            raise ValueError(f"slave id {slave} is not simulated (serving {list(self.slave_ids)})")
        if address < 0 or count < 1 or address + count > self.size:
            raise ValueError(f"addresses {address}..{address + count - 1} are outside 0..{self.size - 1}")

    def _device(self, slave: int) -> SimDevice:
        tables = self._tables[slave]

        def block(table: ModbusTable) -> list[SimData]:
            datatype = DataType.BITS if table.is_bits else DataType.REGISTERS
            return [SimData(0, values=list(tables[table]), datatype=datatype)]

        return SimDevice(
            id=slave,
            simdata=(
                block(ModbusTable.COILS),
                block(ModbusTable.DISCRETE_INPUTS),
                block(ModbusTable.HOLDING_REGISTERS),
                block(ModbusTable.INPUT_REGISTERS),
            ),
        )

    @abc.abstractmethod
    async def _serve(self, devices: list[SimDevice]) -> ModbusTcpServer | ModbusSerialServer:
        """Start a server for ``devices`` on this simulator's transport."""


class ModbusTcpSimulator(ModbusSimulator):
    """A Modbus TCP device on ``host:port`` (a free port unless given)."""

    def __init__(
        self,
        slave_ids: Sequence[int] = (1,),
        *,
        size: int = 128,
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        super().__init__(slave_ids, size=size)
        self.host = host
        self.port = port or free_port(host)

    def __repr__(self) -> str:
        return f"<ModbusTcpSimulator {self.host}:{self.port} slaves={list(self.slave_ids)}>"

    def config_data(self, slave: int) -> dict[str, Any]:
        """``{communicateMode: TCP, ip, port, slaveID}``."""
        return {"communicateMode": "TCP", "ip": self.host, "port": self.port, "slaveID": slave}

    async def _serve(self, devices: list[SimDevice]) -> ModbusTcpServer:
        server = ModbusTcpServer(devices, address=(self.host, self.port))
        await server.serve_forever(background=True)
        return server


class ModbusRtuSimulator(ModbusSimulator):
    """A Modbus RTU line on a pty pair made by socat; the server sits on one end, clients use :attr:`port`.

    Several slave ids share the line, as devices on an RS-485 bus do. The pty pair (and socat) lives from
    :meth:`open` (or the first :meth:`start`) to :meth:`close`, so :meth:`stop` / :meth:`start` keep the
    client's port path valid while the device is dead.
    """

    def __init__(
        self,
        workdir: Path,
        slave_ids: Sequence[int] = (1,),
        *,
        size: int = 128,
        baudrate: int = 19200,
        parity: str = "N",
        bytesize: int = 8,
        stopbits: int = 1,
    ) -> None:
        super().__init__(slave_ids, size=size)
        self.workdir = workdir
        self.baudrate = baudrate
        self.parity = parity
        self.bytesize = bytesize
        self.stopbits = stopbits
        self.server_port = str(workdir / "modbus-server")
        self.port = str(workdir / "modbus-client")
        self._socat: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<ModbusRtuSimulator {self.port} slaves={list(self.slave_ids)}>"

    @property
    def serial_settings(self) -> dict[str, Any]:
        """The line settings, as keyword arguments of pymodbus' serial client."""
        return {
            "baudrate": self.baudrate,
            "parity": self.parity,
            "bytesize": self.bytesize,
            "stopbits": self.stopbits,
        }

    def config_data(self, slave: int) -> dict[str, Any]:
        """``{communicateMode: RTU, serialPort, baudRate, dataBits, parity, stopBits, slaveID}``."""
        return {
            "communicateMode": "RTU",
            "serialPort": self.port,
            "baudRate": self.baudrate,
            "dataBits": self.bytesize,
            "parity": _PARITY_NAMES[self.parity],
            "stopBits": self.stopbits,
            "slaveID": slave,
        }

    async def open(self) -> None:
        """Create the pty pair (``socat -d -d pty,raw,echo=0,link=... pty,raw,echo=0,link=...``)."""
        if self._socat is not None:
            return
        socat = shutil.which("socat")
        if socat is None:
            raise FileNotFoundError("socat not found: install the Debian package socat")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._socat = subprocess.Popen(  # noqa: ASYNC220 - fork/exec only, as asyncio's subprocess does
            [
                socat,
                "-d",
                "-d",
                f"pty,raw,echo=0,link={self.server_port}",
                f"pty,raw,echo=0,link={self.port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await wait_for(self._links_ready, timeout=5.0, what="socat pty links")
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop the device and remove the pty pair; idempotent."""
        await self.stop()
        socat, self._socat = self._socat, None
        if socat is not None:
            socat.terminate()
            try:
                await wait_for(lambda: socat.poll() is not None, timeout=5.0, what="socat exit")
            except WaitTimeout:
                socat.kill()
                await wait_for(lambda: socat.poll() is not None, timeout=5.0, what="socat exit after SIGKILL")

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def _links_ready(self) -> bool:
        if self._socat is not None and self._socat.poll() is not None:
            raise RuntimeError(f"socat exited with code {self._socat.returncode}")
        return os.path.exists(self.server_port) and os.path.exists(self.port)

    async def _serve(self, devices: list[SimDevice]) -> ModbusSerialServer:
        await self.open()
        # Requests written while the device was dead wait in the pty: a real dead device never saw them.
        fd = os.open(self.server_port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            termios.tcflush(fd, termios.TCIOFLUSH)
        finally:
            os.close(fd)
        server = ModbusSerialServer(
            devices,
            framer=FramerType.RTU,
            port=self.server_port,
            baudrate=self.baudrate,
            parity=self.parity,
            bytesize=self.bytesize,
            stopbits=self.stopbits,
        )
        await server.serve_forever(background=True)
        return server
