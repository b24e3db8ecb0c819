"""The device examples are valid (so they cannot drift from the code) and say what they claim."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from device_models import (
    BleVisitorConfig,
    CommunicateMode,
    Device,
    DeviceModel,
    ModbusDataType,
    ModbusProtocolConfig,
    ModbusRegister,
    ModbusVisitorConfig,
    OpcUaProtocolConfig,
    OpcUaVisitorConfig,
    Parity,
    PropertyType,
    device_protocol_config,
    load_documents,
    property_visitor_config,
    validate_paths,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEVICE_EXAMPLES = [
    "modbus-tcp-thermostat.yaml",
    "modbus-rtu-meter.yaml",
    "opcua-boiler.yaml",
    "ble-thermometer.yaml",
    "v1alpha2/modbus-thermostat.yaml",
]


def device_example_files() -> list[Path]:
    """Every example file holding devices.kubeedge.io objects (other examples configure other parts)."""
    found = []
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        if any(str(doc.get("apiVersion", "")).startswith("devices.kubeedge.io/") for doc in documents):
            found.append(path)
    return found


def test_the_device_examples_are_all_there() -> None:
    assert [path.relative_to(EXAMPLES).as_posix() for path in device_example_files()] == sorted(
        DEVICE_EXAMPLES
    )


@pytest.mark.parametrize("path", device_example_files(), ids=lambda path: path.name)
def test_example_is_valid_without_warnings(path: Path) -> None:
    reports = validate_paths([path])

    assert [report.label.split()[0] for report in reports] == ["DeviceModel", "Device"]
    assert [str(problem) for report in reports for problem in report.problems] == []
    assert all(report.ok for report in reports)


def test_all_examples_together_have_no_clash() -> None:
    reports = validate_paths(device_example_files())

    assert [str(problem) for report in reports for problem in report.problems] == []


def load_pair(name: str) -> tuple[DeviceModel, Device]:
    model, device = load_documents(EXAMPLES / name)
    assert isinstance(model, DeviceModel)
    assert isinstance(device, Device)
    return model, device


def test_modbus_tcp_thermostat() -> None:
    model, device = load_pair("modbus-tcp-thermostat.yaml")

    assert (device.id, device.node_name, device.spec.device_model_ref.name) == (
        "default/thermostat-01",
        "edge-node-1",
        model.name,
    )
    assert device.spec.protocol is not None
    assert device.spec.protocol.config_data["port"] == "5502"
    config = device_protocol_config(device)
    assert isinstance(config, ModbusProtocolConfig)
    assert (config.communicate_mode, config.ip, config.port) == (CommunicateMode.TCP, "127.0.0.1", 5502)
    visitors = {name: property_visitor_config(device, name) for name in device.property_names}
    assert {
        name: (visitor.register_type, visitor.offset, visitor.count, visitor.scale, visitor.data_type)
        for name, visitor in visitors.items()
        if isinstance(visitor, ModbusVisitorConfig)
    } == {
        "temperature": (ModbusRegister.INPUT, 0, 1, 0.1, ModbusDataType.FLOAT),
        "setpoint": (ModbusRegister.HOLDING, 0, 1, 0.1, ModbusDataType.FLOAT),
        "heating": (ModbusRegister.COIL, 0, 1, 1.0, ModbusDataType.BOOLEAN),
    }
    temperature, setpoint, heating = (
        model.get_property(name) for name in ("temperature", "setpoint", "heating")
    )
    assert temperature is not None
    assert setpoint is not None
    assert heating is not None
    assert (temperature.type, temperature.writable) == (PropertyType.FLOAT, False)
    assert (setpoint.type, setpoint.writable, setpoint.bounds()) == (PropertyType.FLOAT, True, (5.0, 35.0))
    assert (heating.type, heating.writable) == (PropertyType.BOOLEAN, True)
    desired = device.get_property("setpoint")
    assert desired is not None
    assert desired.desired is not None
    assert desired.desired.value == "21.5"


def test_modbus_rtu_meter() -> None:
    _model, device = load_pair("modbus-rtu-meter.yaml")

    config = device_protocol_config(device)
    assert isinstance(config, ModbusProtocolConfig)
    assert (config.serial_port, config.baud_rate, config.data_bits, config.parity, config.stop_bits) == (
        "/dev/ttyUSB0",
        9600,
        8,
        Parity.NONE,
        1,
    )
    assert config.slave_id == 1
    visitors = [property_visitor_config(device, name) for name in device.property_names]
    assert all(isinstance(visitor, ModbusVisitorConfig) for visitor in visitors)
    assert [
        (visitor.count, visitor.is_register_swap)
        for visitor in visitors
        if isinstance(visitor, ModbusVisitorConfig)
    ] == [(2, True)] * len(visitors)


def test_opcua_boiler() -> None:
    model, device = load_pair("opcua-boiler.yaml")

    config = device_protocol_config(device)
    assert isinstance(config, OpcUaProtocolConfig)
    assert config.url == "opc.tcp://127.0.0.1:4840/edgetwin/boiler"
    node_ids = {name: property_visitor_config(device, name) for name in device.property_names}
    assert node_ids["temperature"] == OpcUaVisitorConfig(
        node_id="ns=2;s=Boiler.Temperature", browse_name="Temperature"
    )
    assert node_ids["setpoint"] == OpcUaVisitorConfig(
        node_id="ns=2;s=Boiler.Setpoint", browse_name="Setpoint"
    )
    setpoint = model.get_property("setpoint")
    assert setpoint is not None
    assert setpoint.writable


def test_ble_thermometer() -> None:
    _model, device = load_pair("ble-thermometer.yaml")

    temperature = property_visitor_config(device, "temperature")
    led = property_visitor_config(device, "led")

    assert isinstance(temperature, BleVisitorConfig)
    assert temperature.data_converter is not None
    assert temperature.data_converter.order_of_operations
    assert isinstance(led, BleVisitorConfig)
    assert led.data_write == {"ON": b"\x01", "OFF": b"\x00"}


def test_v1alpha2_example_converts_to_the_v1beta1_thermostat() -> None:
    old_model, old_device = load_pair("v1alpha2/modbus-thermostat.yaml")
    model, device = load_pair("modbus-tcp-thermostat.yaml")

    assert old_device.node_name == device.node_name
    assert device_protocol_config(old_device) == device_protocol_config(device)
    for name in device.property_names:
        old, new = property_visitor_config(old_device, name), property_visitor_config(device, name)
        assert isinstance(old, ModbusVisitorConfig)
        assert isinstance(new, ModbusVisitorConfig)
        # v1alpha2 visitors have no dataType: the model's type decides.
        assert old == new.model_copy(update={"data_type": None})
    assert [(prop.name, prop.type, prop.writable, prop.bounds()) for prop in old_model.spec.properties] == [
        (prop.name, prop.type, prop.writable, prop.bounds()) for prop in model.spec.properties
    ]
    old_setpoint, new_setpoint = old_device.get_property("setpoint"), device.get_property("setpoint")
    assert old_setpoint is not None
    assert new_setpoint is not None
    assert old_setpoint.desired is not None
    assert new_setpoint.desired is not None
    assert old_setpoint.desired.value == new_setpoint.desired.value
