"""Typed protocol configData (Modbus, OPC-UA, BLE): KubeEdge's names and value forms, and sensible checks."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_models import (
    BLE,
    MODBUS,
    OPCUA,
    BleOperationType,
    BleProtocolConfig,
    BleVisitorConfig,
    CommunicateMode,
    CustomizedConfig,
    Device,
    ModbusDataType,
    ModbusProtocolConfig,
    ModbusRegister,
    ModbusVisitorConfig,
    ModelValidationError,
    OpcUaProtocolConfig,
    OpcUaVisitorConfig,
    Parity,
    SecurityMode,
    SecurityPolicy,
    canonical_protocol_name,
    check_device,
    device_protocol_config,
    is_known_protocol,
    parse_protocol_config,
    parse_visitor_config,
    property_visitor_config,
)


def problems_of(error: pytest.ExceptionInfo[ModelValidationError]) -> list[str]:
    return [str(problem) for problem in error.value.problems]


def modbus_device(config: dict[str, Any], visitor: dict[str, Any] | None = None) -> Device:
    """A Device as the API server holds it: configData is free-form there, so it may be invalid for Modbus."""
    properties = (
        [{"name": "level", "visitors": {"protocolName": "modbus", "configData": visitor}}] if visitor else []
    )
    return Device.model_validate(
        {
            "apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "Device",
            "metadata": {"name": "tank"},
            "spec": {
                "deviceModelRef": {"name": "tank-model"},
                "protocol": {"protocolName": "modbus", "configData": config},
                "properties": properties,
            },
        }
    )


# --- Modbus device ------------------------------------------------------------------------------------------


def test_modbus_tcp_accepts_numbers_written_as_strings() -> None:
    config = parse_protocol_config(
        "modbus", {"communicateMode": "TCP", "ip": "127.0.0.1", "port": "5502", "slaveID": "3"}
    )

    assert config == ModbusProtocolConfig(
        communicate_mode=CommunicateMode.TCP, ip="127.0.0.1", port=5502, slave_id=3
    )


@given(port=st.integers(min_value=1, max_value=65535), as_text=st.booleans())
def test_any_valid_port_reads_the_same_as_number_or_string(port: int, as_text: bool) -> None:
    config = parse_protocol_config(MODBUS, {"ip": "127.0.0.1", "port": str(port) if as_text else port})

    assert isinstance(config, ModbusProtocolConfig)
    assert config.port == port


@pytest.mark.parametrize("port", [0, 65536, "70000", "http"])
def test_port_outside_1_to_65535_is_rejected(port: object) -> None:
    with pytest.raises(ModelValidationError) as caught:
        parse_protocol_config(MODBUS, {"ip": "127.0.0.1", "port": port})

    assert problems_of(caught)[0].startswith(f"port: {port!r} ")


def test_modbus_rtu_settings() -> None:
    config = parse_protocol_config(
        MODBUS,
        {
            "communicateMode": "rtu",
            "serialPort": "/dev/ttyUSB0",
            "baudRate": "19200",
            "dataBits": 7,
            "parity": "Even",
            "stopBits": "2",
            "slaveID": 17,
        },
    )

    assert config == ModbusProtocolConfig(
        communicate_mode=CommunicateMode.RTU,
        serial_port="/dev/ttyUSB0",
        baud_rate=19200,
        data_bits=7,
        parity=Parity.EVEN,
        stop_bits=2,
        slave_id=17,
    )
    assert isinstance(config, ModbusProtocolConfig)
    assert config.parity.letter == "E"


def test_modbus_defaults_and_inferred_mode() -> None:
    tcp = parse_protocol_config(MODBUS, {"ip": "plc-1.local"})
    # KubeEdge's newer mappers call the serial device serialName, older ones left the mode out.
    rtu = parse_protocol_config(MODBUS, {"serialName": "/dev/ttyS1", "parity": "n"})

    assert tcp == ModbusProtocolConfig(
        communicate_mode=CommunicateMode.TCP, ip="plc-1.local", port=502, slave_id=1
    )
    assert isinstance(rtu, ModbusProtocolConfig)
    assert (
        rtu.communicate_mode,
        rtu.serial_port,
        rtu.baud_rate,
        rtu.data_bits,
        rtu.parity,
        rtu.stop_bits,
    ) == (
        CommunicateMode.RTU,
        "/dev/ttyS1",
        9600,
        8,
        Parity.NONE,
        1,
    )


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"communicateMode": "TCP"}, "ip: is required when communicateMode is TCP"),
        (
            {"communicateMode": "RTU", "ip": "127.0.0.1"},
            "serialPort: is required when communicateMode is RTU",
        ),
        ({"communicateMode": "UDP", "ip": "127.0.0.1"}, "communicateMode: 'UDP' is not one of TCP, RTU"),
        ({"ip": "tcp://127.0.0.1:502"}, "ip: 'tcp://127.0.0.1:502' is not an IP address or host name"),
        ({"ip": "127.0.0.1", "slaveID": 256}, "slaveID: 256 must be at most 255"),
        ({"serialPort": "/dev/ttyS0", "parity": "mark"}, "parity: 'mark' is not one of none, even, odd"),
        ({"serialPort": "/dev/ttyS0", "dataBits": 9}, "dataBits: 9 must be at most 8"),
        ({"serialPort": "/dev/ttyS0", "stopBits": 3}, "stopBits: 3 must be at most 2"),
        ({"serialPort": "/dev/ttyS0", "baudRate": "fast"}, "baudRate: 'fast' is not an integer"),
    ],
)
def test_bad_modbus_device_config_names_the_field(config: dict[str, Any], expected: str) -> None:
    with pytest.raises(ModelValidationError) as caught:
        parse_protocol_config(MODBUS, config)

    assert problems_of(caught) == [expected]


# --- Modbus visitor -----------------------------------------------------------------------------------------


def test_modbus_visitor_values_as_kubeedge_writes_them() -> None:
    visitor = parse_visitor_config(
        MODBUS,
        {
            "register": "HoldingRegister",
            "offset": "10",
            "limit": "2",
            "scale": "0.1",
            "isSwap": "true",
            "isRegisterSwap": False,
            "dataType": "Float",
            "max": "100",
            "min": 0,
        },
    )

    assert visitor == ModbusVisitorConfig(
        register_type=ModbusRegister.HOLDING,
        offset=10,
        limit=2,
        scale=0.1,
        is_swap=True,
        is_register_swap=False,
        data_type=ModbusDataType.FLOAT,
        maximum=100.0,
        minimum=0.0,
    )


@given(scale=st.floats(allow_nan=False, allow_infinity=False).filter(lambda value: value != 0))
def test_scale_reads_the_same_as_number_or_string(scale: float) -> None:
    from_text = parse_visitor_config(MODBUS, {"register": "InputRegister", "offset": 0, "scale": repr(scale)})
    from_number = parse_visitor_config(MODBUS, {"register": "InputRegister", "offset": 0, "scale": scale})

    assert isinstance(from_text, ModbusVisitorConfig)
    assert from_text.scale == scale
    assert from_text == from_number


def test_zero_scale_means_no_scaling_as_in_kubeedge() -> None:
    visitor = parse_visitor_config(MODBUS, {"register": "InputRegister", "offset": 0, "scale": 0})

    assert isinstance(visitor, ModbusVisitorConfig)
    assert visitor.scale == 1.0


@pytest.mark.parametrize(
    ("data_type", "limit", "count"),
    [
        ("int", None, 1),
        ("float", 2, 2),
        ("int16", None, 1),
        ("uint16", 1, 1),
        ("int32", None, 2),
        ("UINT32", None, 2),
        ("float32", 2, 2),
        ("int64", None, 4),
        ("float64", None, 4),
        ("string", 8, 8),
        ("bool", None, 1),
    ],
)
def test_register_count_comes_from_limit_or_explicit_type(
    data_type: str, limit: int | None, count: int
) -> None:
    config: dict[str, Any] = {"register": "HoldingRegister", "offset": 100, "dataType": data_type}
    if limit is not None:
        config["limit"] = limit

    visitor = parse_visitor_config(MODBUS, config)

    assert isinstance(visitor, ModbusVisitorConfig)
    assert visitor.count == count


@given(offset=st.integers(min_value=0, max_value=65535), limit=st.integers(min_value=1, max_value=125))
def test_offset_and_limit_must_fit_in_the_address_space(offset: int, limit: int) -> None:
    config = {"register": "InputRegister", "offset": str(offset), "limit": limit}

    if offset + limit <= 65536:
        visitor = parse_visitor_config(MODBUS, config)
        assert isinstance(visitor, ModbusVisitorConfig)
        assert (visitor.offset, visitor.count) == (offset, limit)
    else:
        with pytest.raises(ModelValidationError) as caught:
            parse_visitor_config(MODBUS, config)
        assert problems_of(caught) == [
            f"offset: {offset} + {limit} register(s) goes past the last address 65535"
        ]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"offset": 0}, "register: is required"),
        (
            {"register": "HoldRegister", "offset": 0},
            "register: 'HoldRegister' is not one of CoilRegister, "
            "DiscreteInputRegister, HoldingRegister, InputRegister",
        ),
        ({"register": "CoilRegister"}, "offset: is required"),
        ({"register": "CoilRegister", "offset": -1}, "offset: -1 must be at least 0"),
        ({"register": "CoilRegister", "offset": 65536}, "offset: 65536 must be at most 65535"),
        ({"register": "CoilRegister", "offset": 0, "limit": 0}, "limit: 0 must be at least 1"),
        (
            {"register": "InputRegister", "offset": 0, "limit": 126},
            "limit: 126 is more than one Modbus request can read from InputRegister (125)",
        ),
        (
            {"register": "CoilRegister", "offset": 0, "limit": 2001},
            "limit: 2001 is more than one Modbus request can read from CoilRegister (2000)",
        ),
        (
            {"register": "CoilRegister", "offset": 0, "dataType": "int32"},
            "dataType: 'int32' needs 16-bit registers, but CoilRegister holds single bits",
        ),
        (
            {"register": "InputRegister", "offset": 0, "dataType": "int32", "limit": 1},
            "limit: 1 does not match dataType int32, which takes 2 registers",
        ),
        (
            {"register": "InputRegister", "offset": 0, "dataType": "long"},
            "dataType: 'long' is not one of int, "
            "float, double, string, boolean, bytes, int16, uint16, int32, uint32, int64, float32, float64",
        ),
        ({"register": "InputRegister", "offset": 0, "min": 10, "max": 5}, "min: 10.0 is above max 5.0"),
        ({"register": "InputRegister", "offset": 0, "scale": "inf"}, "scale: 'inf' is not a finite number"),
        (
            {"register": "InputRegister", "offset": 0, "isSwap": "maybe"},
            "isSwap: 'maybe' is not a boolean (true or false)",
        ),
    ],
)
def test_bad_modbus_visitor_names_the_field(config: dict[str, Any], expected: str) -> None:
    with pytest.raises(ModelValidationError) as caught:
        parse_visitor_config(MODBUS, config)

    assert problems_of(caught) == [expected]


def test_register_kinds() -> None:
    assert [register.writable for register in ModbusRegister] == [True, False, True, False]
    assert [register.is_bit for register in ModbusRegister] == [True, True, False, False]


# --- OPC-UA -------------------------------------------------------------------------------------------------


def test_opcua_device_config() -> None:
    config = parse_protocol_config(
        "opcua",
        {
            "url": "opc.tcp://127.0.0.1:4840/edgetwin/boiler",
            "userName": "operator",
            "password": "s3cret",
            "securityPolicy": "http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256",
            "securityMode": "signandencrypt",
            "certificate": "/etc/edgetwin/client.der",
            "privateKey": "/etc/edgetwin/client.pem",
            "timeout": "5",
        },
    )

    assert isinstance(config, OpcUaProtocolConfig)
    assert config.security_policy is SecurityPolicy.BASIC256SHA256
    assert config.security_mode is SecurityMode.SIGN_AND_ENCRYPT
    assert config.timeout == 5.0
    assert config.password is not None
    assert config.password.get_secret_value() == "s3cret"


def test_opcua_password_never_shows() -> None:
    config_data = {"url": "opc.tcp://h:4840", "userName": "u", "password": "s3cret"}
    config = parse_protocol_config(OPCUA, config_data)
    device = Device.model_validate(
        {
            "metadata": {"name": "boiler"},
            "spec": {
                "deviceModelRef": {"name": "m"},
                "protocol": {"protocolName": "opcua", "configData": config_data},
            },
        }
    )

    assert isinstance(config, OpcUaProtocolConfig)
    assert "s3cret" not in repr(config)
    assert "s3cret" not in str(config)
    assert "s3cret" not in config.model_dump_json()
    assert "s3cret" not in repr(device)
    assert "s3cret" not in str(device)
    # The Device itself is what the API server stores: its manifest keeps the configData as it is.
    assert device.to_manifest()["spec"]["protocol"]["configData"]["password"] == "s3cret"


def test_opcua_defaults_to_no_security() -> None:
    config = parse_protocol_config(OPCUA, {"url": "opc.tcp://127.0.0.1:4840", "securityPolicy": "none"})

    assert isinstance(config, OpcUaProtocolConfig)
    assert (config.security_policy, config.security_mode) == (SecurityPolicy.NONE, SecurityMode.NONE)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, "url: is required"),
        ({"url": "http://127.0.0.1:4840"}, "url: 'http://127.0.0.1:4840' is not an OPC-UA endpoint"),
        ({"url": "opc.tcp://h:99999"}, "url: 'opc.tcp://h:99999' has an invalid port"),
        (
            {"url": "opc.tcp://h", "securityMode": "Sign"},
            "securityPolicy: 'None' must name a policy when securityMode is Sign",
        ),
        (
            {"url": "opc.tcp://h", "securityPolicy": "Basic256Sha256"},
            "securityMode: 'None' must be Sign or SignAndEncrypt with securityPolicy Basic256Sha256",
        ),
        (
            {"url": "opc.tcp://h", "privateKey": "/etc/edgetwin/client.pem"},
            "certificate: is required with privateKey",
        ),
        (
            {"url": "opc.tcp://h", "securityPolicy": "Basic512"},
            "securityPolicy: 'Basic512' is not one of None",
        ),
        ({"url": "opc.tcp://h", "password": "p"}, "userName: is required when a password is given"),
        ({"url": "opc.tcp://h", "timeout": 0}, "timeout: 0 must be greater than 0"),
    ],
)
def test_bad_opcua_config_names_the_field(config: dict[str, Any], expected: str) -> None:
    with pytest.raises(ModelValidationError) as caught:
        parse_protocol_config(OPCUA, config)

    assert problems_of(caught)[0].startswith(expected)


@pytest.mark.parametrize(
    ("node_id", "expected"),
    [
        ("ns=2;s=Boiler.Temperature", "ns=2;s=Boiler.Temperature"),
        ("ns=1;i=1005", "ns=1;i=1005"),
        ("i=2258", "i=2258"),
        ("ns=1,i=1005", "ns=1;i=1005"),
        ("nsu=urn:edgetwin;s=Boiler", "nsu=urn:edgetwin;s=Boiler"),
        ("ns=3;g=09087e75-8e5e-499b-954f-f2a9603db28a", "ns=3;g=09087e75-8e5e-499b-954f-f2a9603db28a"),
    ],
)
def test_opcua_node_ids(node_id: str, expected: str) -> None:
    visitor = parse_visitor_config(OPCUA, {"nodeID": node_id, "browseName": "Temperature"})

    assert visitor == OpcUaVisitorConfig(node_id=expected, browse_name="Temperature")


@pytest.mark.parametrize("node_id", ["Boiler.Temperature", "ns=x;i=1", "ns=1;i=abc", "ns=1;q=1"])
def test_bad_opcua_node_id_names_the_field(node_id: str) -> None:
    with pytest.raises(ModelValidationError) as caught:
        parse_visitor_config(OPCUA, {"nodeID": node_id})

    assert problems_of(caught) == [
        f"nodeID: {node_id!r} is not an OPC-UA node id (like ns=2;s=Name or ns=2;i=1005)"
    ]


# --- BLE ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mac", ["a4:c1:38:0d:7e:21", "A4-C1-38-0D-7E-21", "A4:C1:38:0D:7E:21"])
def test_ble_mac_address_is_normalized(mac: str) -> None:
    assert parse_protocol_config("bluetooth", {"macAddress": mac}) == BleProtocolConfig(
        mac_address="A4:C1:38:0D:7E:21"
    )


@pytest.mark.parametrize("mac", ["A4:C1:38:0D:7E", "A4:C1:38:0D:7E:2G", "A4C1380D7E21"])
def test_bad_ble_mac_address_names_the_field(mac: str) -> None:
    with pytest.raises(ModelValidationError) as caught:
        parse_protocol_config(BLE, {"macAddress": mac})

    assert problems_of(caught) == [
        f"macAddress: {mac!r} is not a MAC address (six hex bytes like A4:C1:38:0D:7E:21)"
    ]


def test_a_ble_device_can_be_named_instead_of_addressed() -> None:
    config = parse_protocol_config(BLE, {"deviceName": "thermo-7"})
    assert config == BleProtocolConfig(device_name="thermo-7")


@pytest.mark.parametrize("data", [{}, {"macAddress": ""}, {"deviceName": ""}])
def test_a_ble_device_without_address_or_name_is_refused(data: dict[str, str]) -> None:
    with pytest.raises(ModelValidationError, match="needs macAddress"):
        parse_protocol_config(BLE, data)


@pytest.mark.parametrize(
    ("uuid", "expected"),
    [
        ("2a6e", "00002a6e-0000-1000-8000-00805f9b34fb"),
        ("0x2A6E", "00002a6e-0000-1000-8000-00805f9b34fb"),
        ("f000aa0104514000b000000000000000", "f000aa01-0451-4000-b000-000000000000"),
        ("6E400002-B5A3-F393-E0A9-E50E24DCCA9E", "6e400002-b5a3-f393-e0a9-e50e24dcca9e"),
    ],
)
def test_ble_characteristic_uuid_full_or_short(uuid: str, expected: str) -> None:
    visitor = parse_visitor_config(BLE, {"characteristicUUID": uuid})

    assert isinstance(visitor, BleVisitorConfig)
    assert visitor.characteristic_uuid == expected


def test_ble_data_write_and_converter() -> None:
    visitor = parse_visitor_config(
        BLE,
        {
            "characteristicUUID": "2a6e",
            "dataWrite": {"ON": "01", "OFF": [0], "BLINK": "0x0102", "DIM": "7f 80", "MAX": 255},
            "dataConverter": {
                "startIndex": "1",
                "endIndex": 0,
                "shiftRight": 2,
                "orderOfOperations": [
                    {"operationType": "Multiply", "operationValue": "0.03125"},
                    {"operationType": "Add", "operationValue": -40},
                ],
            },
        },
    )

    assert isinstance(visitor, BleVisitorConfig)
    assert visitor.data_write == {
        "ON": b"\x01",
        "OFF": b"\x00",
        "BLINK": b"\x01\x02",
        "DIM": b"\x7f\x80",
        "MAX": b"\xff",
    }
    converter = visitor.data_converter
    assert converter is not None
    assert (converter.start_index, converter.end_index, converter.shift_left, converter.shift_right) == (
        1,
        0,
        None,
        2,
    )
    assert [(step.operation_type, step.operation_value) for step in converter.order_of_operations] == [
        (BleOperationType.MULTIPLY, 0.03125),
        (BleOperationType.ADD, -40.0),
    ]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, "characteristicUUID: is required"),
        ({"characteristicUUID": "temperature"}, "characteristicUUID: 'temperature' is not a UUID"),
        ({"characteristicUUID": "2a6e", "dataWrite": {"ON": "0g"}}, "dataWrite.ON: '0g' is not a hex string"),
        (
            {"characteristicUUID": "2a6e", "dataWrite": {"ON": [1, 256]}},
            "dataWrite.ON: [1, 256] is not a list of byte values (0 to 255)",
        ),
        (
            {
                "characteristicUUID": "2a6e",
                "dataConverter": {"orderOfOperations": [{"operationType": "Modulo", "operationValue": 2}]},
            },
            "dataConverter.orderOfOperations[0].operationType: 'Modulo' is not one of Add, Subtract, "
            "Multiply, "
            "Divide",
        ),
        (
            {
                "characteristicUUID": "2a6e",
                "dataConverter": {"orderOfOperations": [{"operationType": "Divide", "operationValue": 0}]},
            },
            "dataConverter.orderOfOperations[0].operationValue: 0.0 divides by zero",
        ),
        (
            {"characteristicUUID": "2a6e", "dataConverter": {"startIndex": -1}},
            "dataConverter.startIndex: -1 must be at least 0",
        ),
    ],
)
def test_bad_ble_visitor_names_the_field(config: dict[str, Any], expected: str) -> None:
    with pytest.raises(ModelValidationError) as caught:
        parse_visitor_config(BLE, config)

    assert problems_of(caught)[0].startswith(expected)


# --- Protocol names and lookups on a Device -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "canonical", "known"),
    [
        ("modbus", MODBUS, True),
        ("Modbus", MODBUS, True),
        ("opcua", OPCUA, True),
        ("OPC-UA", OPCUA, True),
        ("ble", BLE, True),
        ("bluetooth", BLE, True),
        ("zigbee", "zigbee", False),
    ],
)
def test_protocol_names(name: str, canonical: str, known: bool) -> None:
    assert canonical_protocol_name(name) == canonical
    assert is_known_protocol(name) is known


def test_unknown_protocol_configs_are_kept_free_form() -> None:
    data = {"anything": [1, {"goes": True}]}

    assert parse_protocol_config("zigbee", data) == CustomizedConfig("zigbee", data)
    assert parse_visitor_config("zigbee", data) == CustomizedConfig("zigbee", data)


def test_typed_configs_of_a_device_and_its_properties() -> None:
    device = modbus_device({"ip": "127.0.0.1", "port": "5502"}, {"register": "InputRegister", "offset": "7"})

    config = device_protocol_config(device)
    visitor = property_visitor_config(device, "level")

    assert isinstance(config, ModbusProtocolConfig)
    assert config.port == 5502
    assert isinstance(visitor, ModbusVisitorConfig)
    assert visitor.offset == 7


def test_bad_typed_config_of_a_device_names_the_field_in_the_device() -> None:
    device = modbus_device({"ip": "127.0.0.1", "port": "x"}, {"register": "InputRegister", "offset": -5})

    with pytest.raises(ModelValidationError) as protocol_error:
        device_protocol_config(device)
    with pytest.raises(ModelValidationError) as visitor_error:
        property_visitor_config(device, "level")
    with pytest.raises(ModelValidationError) as missing_error:
        property_visitor_config(device, "volume")

    assert problems_of(protocol_error) == [
        "Device default/tank: spec.protocol.configData.port: 'x' is not an integer"
    ]
    assert problems_of(visitor_error) == [
        "Device default/tank: spec.properties[name=level].visitors.configData.offset: -5 must be at least 0"
    ]
    assert problems_of(missing_error) == [
        "Device default/tank: spec.properties: 'volume' has no property of that name"
    ]


def test_unknown_config_keys_are_warnings() -> None:
    device = modbus_device(
        {"ip": "127.0.0.1", "rs485Enabled": True}, {"register": "InputRegister", "offset": 0, "unit": "m"}
    )

    problems = check_device(device)

    assert [(problem.severity, str(problem)) for problem in problems] == [
        (
            "warning",
            "Device default/tank: spec.protocol.configData.rs485Enabled: True is not a modbus setting "
            "edgetwin knows (ignored)",
        ),
        (
            "warning",
            "Device default/tank: spec.properties[name=level].visitors.configData.unit: 'm' is not a "
            "modbus setting edgetwin knows (ignored)",
        ),
    ]
