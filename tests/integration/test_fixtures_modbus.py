"""The simulated Modbus devices serve every table to a real pymodbus client, over TCP and RTU, and can die."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerType

from edgetwin.testing.modbus import ModbusRtuSimulator, ModbusSimulator, ModbusTcpSimulator

Client = AsyncModbusTcpClient | AsyncModbusSerialClient


def make_client(simulator: ModbusSimulator) -> Client:
    if isinstance(simulator, ModbusTcpSimulator):
        return AsyncModbusTcpClient(simulator.host, port=simulator.port, timeout=1, retries=0)
    assert isinstance(simulator, ModbusRtuSimulator)
    return AsyncModbusSerialClient(
        simulator.port, framer=FramerType.RTU, timeout=1, retries=0, **simulator.serial_settings
    )


@pytest_asyncio.fixture
async def client(modbus_server: ModbusSimulator) -> AsyncIterator[Client]:
    client = make_client(modbus_server)
    assert await client.connect()
    try:
        yield client
    finally:
        client.close()


async def test_holding_registers_both_ways(modbus_server: ModbusSimulator, client: Client) -> None:
    await modbus_server.set_holding(1, 10, [215, 0xFFFF, 0])
    read = await client.read_holding_registers(10, count=3, device_id=1)
    assert not read.isError()
    assert read.registers == [215, 0xFFFF, 0]

    written = await client.write_registers(20, [7, 8], device_id=2)
    assert not written.isError()
    assert await modbus_server.get_holding(2, 20, 2) == [7, 8]
    # Slave ids have their own tables.
    assert await modbus_server.get_holding(1, 20, 2) == [0, 0]


async def test_coils_both_ways(modbus_server: ModbusSimulator, client: Client) -> None:
    written = await client.write_coils(3, [True, False, True], device_id=1)
    assert not written.isError()
    assert await modbus_server.get_coils(1, 2, 5) == [False, True, False, True, False]

    await modbus_server.set_coils(2, 100, [True, True])
    read = await client.read_coils(99, count=4, device_id=2)
    assert read.bits[:4] == [False, True, True, False]


async def test_discrete_inputs_and_input_registers_are_read_by_the_client(
    modbus_server: ModbusSimulator, client: Client
) -> None:
    await modbus_server.set_discrete(1, 17, [True])
    await modbus_server.set_inputs(2, 5, [1234, 42])
    discrete = await client.read_discrete_inputs(16, count=3, device_id=1)
    assert discrete.bits[:3] == [False, True, False]
    inputs = await client.read_input_registers(5, count=2, device_id=2)
    assert inputs.registers == [1234, 42]


async def test_reading_outside_the_table_is_a_modbus_error(
    modbus_server: ModbusSimulator, client: Client
) -> None:
    response = await client.read_holding_registers(modbus_server.size - 1, count=2, device_id=1)
    assert response.isError()


async def test_a_stopped_device_is_dead_and_comes_back_with_its_values(
    modbus_server: ModbusSimulator,
) -> None:
    await modbus_server.set_holding(1, 0, [11, 22])
    await modbus_server.stop()
    assert not modbus_server.running
    # Values stay settable while the device is off the line.
    await modbus_server.set_holding(1, 2, [33])

    dead = make_client(modbus_server)
    try:
        if await dead.connect():  # RTU: the port opens, but nobody answers
            with pytest.raises(ModbusException):
                await dead.read_holding_registers(0, count=1, device_id=1)
        else:  # TCP: nobody listens
            assert isinstance(modbus_server, ModbusTcpSimulator)
    finally:
        dead.close()

    await modbus_server.start()
    alive = make_client(modbus_server)
    try:
        assert await alive.connect()
        read = await alive.read_holding_registers(0, count=3, device_id=1)
        assert read.registers == [11, 22, 33]
    finally:
        alive.close()


async def test_direct_access_checks_slave_and_range(modbus_tcp_server: ModbusTcpSimulator) -> None:
    with pytest.raises(ValueError, match="slave id 9"):
        await modbus_tcp_server.get_holding(9, 0)
    with pytest.raises(ValueError, match="outside"):
        await modbus_tcp_server.set_holding(1, modbus_tcp_server.size, [1])
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        await modbus_tcp_server.set_holding(1, 0, [70000])


async def test_config_data_is_kubeedge_shaped(
    modbus_tcp_server: ModbusTcpSimulator, modbus_rtu_server: ModbusRtuSimulator
) -> None:
    assert modbus_tcp_server.config_data(2) == {
        "communicateMode": "TCP",
        "ip": "127.0.0.1",
        "port": modbus_tcp_server.port,
        "slaveID": 2,
    }
    assert modbus_rtu_server.config_data(1) == {
        "communicateMode": "RTU",
        "serialPort": modbus_rtu_server.port,
        "baudRate": 19200,
        "dataBits": 8,
        "parity": "none",
        "stopBits": 1,
        "slaveID": 1,
    }
