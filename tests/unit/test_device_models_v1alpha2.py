"""Reading devices.kubeedge.io/v1alpha2 Devices and DeviceModels, converted to v1beta1 field by field."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from device_models import (
    BleVisitorConfig,
    Device,
    DeviceModel,
    ModelValidationError,
    parse_document,
    property_visitor_config,
)

MODEL = """
apiVersion: devices.kubeedge.io/v1alpha2
kind: DeviceModel
metadata:
  name: sensor-model
  namespace: plant
  labels: {vendor: acme}
spec:
  properties:
    - name: count
      description: pulses
      type:
        int: {accessMode: ReadWrite, defaultValue: 1, minimum: 0, maximum: 100, unit: pulse}
    - name: label
      type:
        string: {accessMode: ReadWrite, defaultValue: "ON"}
    - name: temperature
      type:
        double: {accessMode: ReadOnly, minimum: -40.5, maximum: 85, unit: Cel}
    - name: ratio
      type:
        float: {accessMode: ReadWrite, minimum: 0.25, maximum: 1}
    - name: enabled
      type:
        boolean: {accessMode: ReadWrite, defaultValue: true}
    - name: raw
      type:
        bytes: {accessMode: ReadOnly}
"""

MODBUS_DEVICE = """
apiVersion: devices.kubeedge.io/v1alpha2
kind: Device
metadata:
  name: sensor-01
  namespace: plant
spec:
  deviceModelRef: {name: sensor-model}
  protocol:
    modbus: {slaveID: 2}
    common:
      com: {serialPort: /dev/ttyS0, baudRate: 19200, dataBits: 8, parity: even, stopBits: 1}
      collectTimeout: 500
      customizedValues: {rs485: true}
  nodeSelector:
    nodeSelectorTerms:
      - matchExpressions:
          - {key: "", operator: In, values: [edge-node-2]}
  propertyVisitors:
    - propertyName: count
      reportCycle: 2000
      collectCycle: 1000
      modbus: {register: HoldingRegister, offset: 4, limit: 1, scale: 1, isSwap: true, isRegisterSwap: false}
      customizedValues: {dataType: int}
    - propertyName: temperature
      modbus: {register: InputRegister, offset: 0, limit: 2}
  data:
    dataTopic: $ke/events/device/+/data/update
    dataProperties:
      - propertyName: raw
        metadata: {type: bytes}
status:
  state: online
  lastOnline: "2024-01-01T00:00:00Z"
  twins:
    - propertyName: count
      desired: {value: "5", metadata: {type: int}}
      reported: {value: "4", metadata: {type: int, timestamp: "1700000000000"}}
    - propertyName: enabled
      desired: {value: "true"}
    - propertyName: label
"""


def convert(text: str) -> Any:
    return parse_document(yaml.safe_load(text))


def test_device_model_types_become_v1beta1_fields() -> None:
    model = convert(MODEL)

    assert isinstance(model, DeviceModel)
    assert model.to_manifest() == {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "DeviceModel",
        "metadata": {"name": "sensor-model", "namespace": "plant", "labels": {"vendor": "acme"}},
        "spec": {
            "properties": [
                {
                    "name": "count",
                    "description": "pulses",
                    "type": "INT",
                    "accessMode": "ReadWrite",
                    "minimum": "0",
                    "maximum": "100",
                    "unit": "pulse",
                },
                {"name": "label", "type": "STRING", "accessMode": "ReadWrite"},
                {
                    "name": "temperature",
                    "type": "DOUBLE",
                    "accessMode": "ReadOnly",
                    "minimum": "-40.5",
                    "maximum": "85",
                    "unit": "Cel",
                },
                {
                    "name": "ratio",
                    "type": "FLOAT",
                    "accessMode": "ReadWrite",
                    "minimum": "0.25",
                    "maximum": "1",
                },
                {"name": "enabled", "type": "BOOLEAN", "accessMode": "ReadWrite"},
                {"name": "raw", "type": "BYTES", "accessMode": "ReadOnly"},
            ]
        },
    }


def test_modbus_device_becomes_v1beta1_field_by_field() -> None:
    device = convert(MODBUS_DEVICE)

    assert isinstance(device, Device)
    assert device.to_manifest() == {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": "sensor-01", "namespace": "plant"},
        "spec": {
            "deviceModelRef": {"name": "sensor-model"},
            "nodeName": "edge-node-2",
            "properties": [
                {
                    "name": "count",
                    "desired": {"value": "5", "metadata": {"type": "int"}},
                    "visitors": {
                        "protocolName": "modbus",
                        "configData": {
                            "register": "HoldingRegister",
                            "offset": 4,
                            "limit": 1,
                            "scale": 1.0,
                            "isSwap": True,
                            "isRegisterSwap": False,
                            "dataType": "int",
                        },
                    },
                    "reportCycle": 2000,
                    "collectCycle": 1000,
                    "reportToCloud": True,
                },
                {
                    "name": "temperature",
                    "visitors": {
                        "protocolName": "modbus",
                        "configData": {"register": "InputRegister", "offset": 0, "limit": 2},
                    },
                    "reportToCloud": True,
                },
                {"name": "enabled", "desired": {"value": "true"}, "reportToCloud": True},
                {"name": "label", "reportToCloud": True},
                {
                    "name": "raw",
                    "reportToCloud": False,
                    "pushMethod": {"mqtt": {"topic": "$ke/events/device/+/data/update"}},
                },
            ],
            "protocol": {
                "protocolName": "modbus",
                "configData": {
                    "slaveID": 2,
                    "communicateMode": "RTU",
                    "serialPort": "/dev/ttyS0",
                    "baudRate": 19200,
                    "dataBits": 8,
                    "parity": "even",
                    "stopBits": 1,
                    "collectTimeout": 500,
                    "rs485": True,
                },
            },
        },
        "status": {
            "twins": [
                {
                    "propertyName": "count",
                    "reported": {"value": "4", "metadata": {"type": "int", "timestamp": "1700000000000"}},
                }
            ],
            "state": "online",
            "lastOnlineTime": "2024-01-01T00:00:00Z",
        },
    }


def test_modbus_tcp_common_becomes_communicate_mode_tcp() -> None:
    document = yaml.safe_load(MODBUS_DEVICE)
    document["spec"]["protocol"] = {
        "modbus": {"slaveID": 1},
        "common": {"tcp": {"ip": "127.0.0.1", "port": 5502}},
    }

    device = parse_document(document)

    assert isinstance(device, Device)
    assert device.spec.protocol is not None
    assert device.spec.protocol.config_data == {
        "slaveID": 1,
        "communicateMode": "TCP",
        "ip": "127.0.0.1",
        "port": 5502,
    }


def test_opcua_bluetooth_and_customized_protocols() -> None:
    opcua = yaml.safe_load(MODBUS_DEVICE)
    opcua["spec"]["protocol"] = {
        "opcua": {"url": "opc.tcp://127.0.0.1:4840", "userName": "u", "password": "p"}
    }
    opcua["spec"]["propertyVisitors"] = [
        {"propertyName": "temperature", "opcua": {"nodeID": "ns=2;s=T", "browseName": "T"}}
    ]
    ble = yaml.safe_load(MODBUS_DEVICE)
    ble["spec"]["protocol"] = {"bluetooth": {"macAddress": "BC:6A:29:AE:CC:96"}}
    ble["spec"]["propertyVisitors"] = [
        {
            "propertyName": "label",
            "bluetooth": {
                "characteristicUUID": "f000aa0204514000b000000000000000",
                # v1alpha2 dataWrite values are Go []byte: base64 in YAML ("AQ==" is 0x01), or byte lists.
                "dataWrite": {"ON": "AQ==", "OFF": [0]},
                "dataConverter": {
                    "startIndex": 1,
                    "endIndex": 0,
                    "orderOfOperations": [{"operationType": "Multiply", "operationValue": 0.5}],
                },
            },
        }
    ]
    custom = yaml.safe_load(MODBUS_DEVICE)
    custom["spec"]["protocol"] = {
        "customizedProtocol": {"protocolName": "zigbee", "configData": {"channel": 11}}
    }
    custom["spec"]["propertyVisitors"] = [
        {
            "propertyName": "count",
            "customizedProtocol": {"protocolName": "zigbee", "configData": {"cluster": 8}},
        }
    ]

    opcua_device, ble_device, custom_device = (parse_document(doc) for doc in (opcua, ble, custom))

    assert isinstance(opcua_device, Device)
    assert isinstance(ble_device, Device)
    assert isinstance(custom_device, Device)
    assert opcua_device.to_manifest()["spec"]["protocol"] == {
        "protocolName": "opcua",
        "configData": {"url": "opc.tcp://127.0.0.1:4840", "userName": "u", "password": "p"},
    }
    assert opcua_device.to_manifest()["spec"]["properties"][0]["visitors"] == {
        "protocolName": "opcua",
        "configData": {"nodeID": "ns=2;s=T", "browseName": "T"},
    }
    assert ble_device.to_manifest()["spec"]["protocol"] == {
        "protocolName": "ble",
        "configData": {"macAddress": "BC:6A:29:AE:CC:96"},
    }
    visitor = property_visitor_config(ble_device, "label")
    assert isinstance(visitor, BleVisitorConfig)
    assert visitor.data_write == {"ON": b"\x01", "OFF": b"\x00"}
    assert visitor.characteristic_uuid == "f000aa02-0451-4000-b000-000000000000"
    assert custom_device.to_manifest()["spec"]["protocol"] == {
        "protocolName": "zigbee",
        "configData": {"channel": 11},
    }
    assert custom_device.to_manifest()["spec"]["properties"][0]["visitors"] == {
        "protocolName": "zigbee",
        "configData": {"cluster": 8},
    }


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda doc: doc["spec"]["protocol"].update(opcua={"url": "opc.tcp://h"}),
            "Device plant/sensor-01: spec.protocol.modbus: cannot be set together with opcua",
        ),
        (
            lambda doc: doc["spec"]["protocol"]["common"].update(tcp={"ip": "127.0.0.1"}),
            "Device plant/sensor-01: spec.protocol.common.tcp: cannot be set together with com",
        ),
        (
            lambda doc: doc["spec"]["propertyVisitors"][0]["modbus"].update(register="HoldRegister"),
            "Device plant/sensor-01: spec.propertyVisitors[propertyName=count].modbus.register: "
            "'HoldRegister' "
            "is not one of CoilRegister, DiscreteInputRegister, HoldingRegister, InputRegister",
        ),
        (
            lambda doc: doc["spec"]["propertyVisitors"][0]["modbus"].update(offset=70000),
            "Device plant/sensor-01 (converted from devices.kubeedge.io/v1alpha2): "
            "spec.properties[name=count].visitors.configData.offset: 70000 must be at most 65535",
        ),
    ],
)
def test_v1alpha2_errors_name_the_field(change: Any, expected: str) -> None:
    document = yaml.safe_load(MODBUS_DEVICE)
    change(document)

    with pytest.raises(ModelValidationError) as caught:
        parse_document(document)

    assert [str(problem) for problem in caught.value.problems] == [expected]


def test_v1alpha2_property_type_needs_exactly_one_member() -> None:
    document = yaml.safe_load(MODEL)
    document["spec"]["properties"][0]["type"]["string"] = {"accessMode": "ReadOnly"}

    with pytest.raises(ModelValidationError) as caught:
        parse_document(document)

    assert [str(problem) for problem in caught.value.problems] == [
        "DeviceModel plant/sensor-model: spec.properties[name=count].type: must set exactly one of int, "
        "string, "
        "double, float, boolean, bytes"
    ]
