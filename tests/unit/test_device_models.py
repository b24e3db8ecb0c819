"""Device / DeviceModel v1beta1: KubeEdge's YAML in and out, helpers, and errors that name the field."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from device_models import (
    AccessMode,
    CustomizedConfig,
    Device,
    DeviceModel,
    DeviceSpec,
    LocalObjectReference,
    ModelProperty,
    ModelValidationError,
    ObjectMeta,
    PropertyType,
    TwinProperty,
    check_device,
    check_device_against_model,
    device_protocol_config,
    load_text,
    parse_document,
)

MODEL_YAML = """
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata:
  name: thermostat-model
  namespace: default
spec:
  protocol: modbus
  properties:
    - name: temperature
      description: Room temperature
      type: FLOAT
      accessMode: ReadOnly
      unit: Cel
    - name: setpoint
      type: FLOAT
      accessMode: ReadWrite
      minimum: "5"
      maximum: "35"
    - name: heating
      type: BOOLEAN
      accessMode: ReadWrite
"""

# Every field KubeEdge's v1beta1 Device has, so a round trip shows none is lost or renamed.
DEVICE_YAML = """
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: thermostat
  namespace: plant-a
  labels:
    model: thermostat-model
  annotations:
    note: lobby
  uid: 6aa3e107-d289-4db0-9de7-dc3ef4ae1eb1
  resourceVersion: "206"
  generation: 2
  creationTimestamp: "2024-01-01T00:00:00Z"
  finalizers:
    - edgetwin.io/device
spec:
  deviceModelRef:
    name: thermostat-model
  nodeName: edge-node-1
  properties:
    - name: temperature
      visitors:
        protocolName: modbus
        configData:
          register: InputRegister
          offset: 0
          limit: 1
          scale: 0.1
          dataType: float
      reportCycle: 1000
      collectCycle: 500
      reportToCloud: true
      pushMethod:
        mqtt:
          address: tcp://127.0.0.1:1883
          topic: temperature
          qos: 1
          retained: false
        http:
          hostName: http://127.0.0.1
          port: 8080
          requestPath: /data
          timeout: 1000
        otel:
          endpointURL: http://127.0.0.1:4318/v1/metrics
        dbMethod:
          influxdb2:
            influxdb2ClientConfig:
              url: http://127.0.0.1:8086
              org: edgetwin
              bucket: devices
            influxdb2DataConfig:
              measurement: temperature
              tag:
                room: lobby
              fieldKey: celsius
          redis:
            redisClientConfig:
              addr: 127.0.0.1:6379
              db: 0
              poolsize: 10
              minIdleConns: 1
          TDEngine:
            TDEngineClientConfig:
              addr: 127.0.0.1:6041
              dbName: devices
          mysql:
            mysqlClientConfig:
              addr: 127.0.0.1:3306
              database: devices
              userName: edgetwin
          Kwdb:
            KWDBClientConfig:
              addr: 127.0.0.1:26257
              dbName: devices
        anomalyDetection:
          threshold: 3
          window: [10, 20]
    - name: setpoint
      desired:
        value: "21.5"
        metadata:
          timestamp: "1700000000000"
      visitors:
        protocolName: modbus
        configData:
          register: HoldingRegister
          offset: 0
          scale: 0.1
  protocol:
    protocolName: modbus
    configData:
      communicateMode: TCP
      ip: 127.0.0.1
      port: "5502"
      slaveID: 1
  methods:
    - name: set-setpoint
      description: Change the target temperature
      propertyNames:
        - setpoint
  stateReport:
    reportCycle: 10000
    reportToCloud: true
status:
  twins:
    - propertyName: temperature
      reported:
        value: "20.5"
        metadata:
          timestamp: "1700000000000"
          type: float
      observedDesired:
        value: "21.5"
  state: online
  lastOnlineTime: "2024-01-01T00:00:00Z"
  reportToCloud: true
  reportCycle: 10000
  conditions:
    - type: Valid
      status: "True"
      reason: Checked
      message: all good
      lastTransitionTime: "2024-01-01T00:00:00Z"
      observedGeneration: 2
"""


def device_doc() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(DEVICE_YAML)
    return document


def model_doc() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(MODEL_YAML)
    return document


def test_round_trip_gives_back_kubeedge_yaml() -> None:
    device = parse_document(device_doc())

    dumped = device.to_manifest()

    assert isinstance(device, Device)
    assert dumped == device_doc()
    assert dumped == device.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert parse_document(dumped) == device


def test_model_round_trip() -> None:
    model = parse_document(model_doc())

    assert isinstance(model, DeviceModel)
    assert model.to_manifest() == model_doc()
    assert parse_document(model.to_manifest()) == model


def test_dump_omits_empty_fields_like_go_omitempty() -> None:
    device = Device(
        metadata=ObjectMeta(name="plain"), spec=DeviceSpec(device_model_ref=LocalObjectReference(name="m"))
    )

    assert device.to_manifest() == {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": "plain", "namespace": "default"},
        "spec": {"deviceModelRef": {"name": "m"}},
    }


def test_fields_accept_python_names_and_yaml_names() -> None:
    by_name = ModelProperty(name="setpoint", type=PropertyType.FLOAT, access_mode=AccessMode.READ_WRITE)
    by_alias = ModelProperty.model_validate({"name": "setpoint", "type": "FLOAT", "accessMode": "ReadWrite"})

    assert by_name == by_alias
    assert by_name.model_dump(by_alias=True) == {
        "name": "setpoint",
        "type": "FLOAT",
        "accessMode": "ReadWrite",
    }


def test_device_helpers() -> None:
    device = parse_document(device_doc())
    assert isinstance(device, Device)

    assert device.id == "plant-a/thermostat"
    assert device.label == "Device plant-a/thermostat"
    assert device.model_id == "plant-a/thermostat-model"
    assert device.node_name == "edge-node-1"
    assert device.protocol_name == "modbus"
    assert device.property_names == ["temperature", "setpoint"]
    setpoint = device.get_property("setpoint")
    assert setpoint is not None
    assert setpoint.desired == TwinProperty(value="21.5", metadata={"timestamp": "1700000000000"})
    assert device.get_property("humidity") is None
    twin = device.get_twin("temperature")
    assert twin is not None
    assert twin.reported is not None
    assert twin.reported.value == "20.5"
    assert device.get_twin("setpoint") is None
    assert device.metadata.model_extra == {"finalizers": ["edgetwin.io/device"]}


def test_device_model_helpers() -> None:
    model = parse_document(model_doc())
    assert isinstance(model, DeviceModel)

    assert model.id == "default/thermostat-model"
    assert model.property_names == ["temperature", "setpoint", "heating"]
    temperature = model.get_property("temperature")
    setpoint = model.get_property("setpoint")
    assert temperature is not None
    assert setpoint is not None
    assert not temperature.writable
    assert setpoint.writable
    assert setpoint.bounds() == (5.0, 35.0)
    assert model.get_property("humidity") is None


def test_access_mode_defaults_to_writable() -> None:
    assert ModelProperty(name="mode", type=PropertyType.STRING).writable


@pytest.mark.parametrize(
    ("property_type", "text", "expected"),
    [
        (PropertyType.INT, "42", 42),
        (PropertyType.INT, "-7", -7),
        (PropertyType.FLOAT, "21.5", 21.5),
        (PropertyType.DOUBLE, "1e3", 1000.0),
        (PropertyType.BOOLEAN, "true", True),
        (PropertyType.BOOLEAN, "false", False),
        (PropertyType.STRING, "ON", "ON"),
        (PropertyType.BYTES, "AQI=", "AQI="),
    ],
)
def test_values_parse_as_the_property_type(property_type: PropertyType, text: str, expected: object) -> None:
    prop = ModelProperty(name="p", type=property_type)

    assert prop.parse_value(text) == expected


@pytest.mark.parametrize(
    ("property_type", "text", "reason"),
    [
        (PropertyType.INT, "4.2", "is not an integer (INT)"),
        (PropertyType.INT, "1_000", "is not an integer (INT)"),
        (PropertyType.FLOAT, "warm", "is not a number (FLOAT)"),
        (PropertyType.DOUBLE, "nan", "is not a number (DOUBLE)"),
        (PropertyType.BOOLEAN, "True", "is not a boolean (exactly true or false)"),
        (PropertyType.BOOLEAN, "1", "is not a boolean (exactly true or false)"),
    ],
)
def test_values_that_do_not_parse_say_why(property_type: PropertyType, text: str, reason: str) -> None:
    prop = ModelProperty(name="p", type=property_type)

    with pytest.raises(ValueError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        prop.parse_value(text)


@pytest.mark.parametrize(
    ("text", "reason"), [("4.9", "is below the minimum 5"), ("35.5", "is above the maximum 35")]
)
def test_values_must_lie_within_minimum_and_maximum(text: str, reason: str) -> None:
    prop = ModelProperty(name="setpoint", type=PropertyType.FLOAT, minimum="5", maximum="35")

    assert prop.parse_value("5") == 5.0
    assert prop.parse_value("35") == 35.0
    with pytest.raises(ValueError, match=reason):
        prop.parse_value(text)


def _property(document: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(prop for prop in document["spec"]["properties"] if prop["name"] == name)
    return found


def _set_register(document: dict[str, Any]) -> None:
    _property(document, "setpoint")["visitors"]["configData"]["register"] = "HoldRegister"


def _set_offset(document: dict[str, Any]) -> None:
    _property(document, "setpoint")["visitors"]["configData"]["offset"] = 70000


def _set_report_cycle(document: dict[str, Any]) -> None:
    _property(document, "setpoint")["reportCycle"] = "often"


def _drop_model_ref(document: dict[str, Any]) -> None:
    del document["spec"]["deviceModelRef"]


def _set_parity(document: dict[str, Any]) -> None:
    document["spec"]["protocol"]["configData"] = {"serialPort": "/dev/ttyUSB0", "parity": "mark"}


def _set_ble_mac(document: dict[str, Any]) -> None:
    document["spec"]["protocol"] = {"protocolName": "ble", "configData": {"macAddress": "A4:C1:38:0D:7E"}}
    document["spec"]["properties"] = []


def _misspell_field(document: dict[str, Any]) -> None:
    _property(document, "setpoint")["reportcycle"] = 5


def _unquoted_desired(document: dict[str, Any]) -> None:
    _property(document, "setpoint")["desired"] = {"value": 21.5}


def _upper_case_name(document: dict[str, Any]) -> None:
    document["metadata"]["name"] = "Thermostat"


def _bad_property_name(document: dict[str, Any]) -> None:
    _property(document, "temperature")["name"] = "room temperature"


def _duplicate_property(document: dict[str, Any]) -> None:
    document["spec"]["properties"].append(copy.deepcopy(_property(document, "temperature")))


def _visitor_protocol_mismatch(document: dict[str, Any]) -> None:
    _property(document, "setpoint")["visitors"]["protocolName"] = "opcua"


def _desired_on_input_register(document: dict[str, Any]) -> None:
    _property(document, "temperature")["desired"] = {"value": "20"}


def _method_of_unknown_property(document: dict[str, Any]) -> None:
    document["spec"]["methods"][0]["propertyNames"].append("humidity")


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        pytest.param(
            _set_register,
            "Device plant-a/thermostat: spec.properties[name=setpoint].visitors.configData.register: "
            "'HoldRegister' is not one of CoilRegister, DiscreteInputRegister, HoldingRegister, "
            "InputRegister",
            id="unknown register type",
        ),
        pytest.param(
            _set_offset,
            "spec.properties[name=setpoint].visitors.configData.offset: 70000 must be at most 65535",
            id="out-of-range offset",
        ),
        pytest.param(
            _set_report_cycle,
            "spec.properties[name=setpoint].reportCycle: 'often' is not an integer",
            id="wrong type",
        ),
        pytest.param(_drop_model_ref, "spec.deviceModelRef: is required", id="missing deviceModelRef"),
        pytest.param(
            _set_parity,
            "spec.protocol.configData.parity: 'mark' is not one of none, even, odd",
            id="bad parity",
        ),
        pytest.param(
            _set_ble_mac,
            "spec.protocol.configData.macAddress: 'A4:C1:38:0D:7E' is not a MAC address",
            id="bad MAC",
        ),
        pytest.param(
            _misspell_field, "spec.properties[name=setpoint].reportcycle: 5 is not a known field", id="typo"
        ),
        pytest.param(
            _unquoted_desired,
            "spec.properties[name=setpoint].desired.value: 21.5 is not a string (write it in quotes)",
            id="unquoted value",
        ),
        pytest.param(
            _upper_case_name, "metadata.name: 'Thermostat' is not a valid Kubernetes name", id="name"
        ),
        pytest.param(
            _bad_property_name,
            "spec.properties[name=room temperature].name: 'room temperature' is not a valid property name",
            id="property name",
        ),
        pytest.param(
            _duplicate_property,
            "spec.properties[name=temperature].name: 'temperature' is defined twice",
            id="duplicate property",
        ),
        pytest.param(
            _visitor_protocol_mismatch,
            "spec.properties[name=setpoint].visitors.protocolName: 'opcua' does not match "
            "spec.protocol.protocolName 'modbus'",
            id="visitor protocol",
        ),
        pytest.param(
            _desired_on_input_register,
            "spec.properties[name=temperature].desired.value: '20' cannot be written: InputRegister is "
            "read-only",
            id="desired on a read-only register",
        ),
        pytest.param(
            _method_of_unknown_property,
            "spec.methods[name=set-setpoint].propertyNames[1]: 'humidity' is not a property in "
            "spec.properties",
            id="method",
        ),
    ],
)
def test_invalid_devices_name_the_field_and_value(
    mutate: Callable[[dict[str, Any]], None], expected: str
) -> None:
    document = device_doc()
    mutate(document)

    with pytest.raises(ModelValidationError) as caught:
        parse_document(document)

    assert any(expected in str(problem) for problem in caught.value.problems), str(caught.value)
    assert all(problem.is_error for problem in caught.value.problems)


def test_every_problem_is_listed_at_once() -> None:
    document = device_doc()
    _set_register(document)
    _set_report_cycle(document)
    document["metadata"]["name"] = "Bad_Name"

    with pytest.raises(ModelValidationError) as caught:
        parse_document(document)

    paths = sorted(problem.path for problem in caught.value.problems)
    assert paths == ["metadata.name", "spec.properties[name=setpoint].reportCycle"]
    assert len(str(caught.value).splitlines()) == 2


def _device_and_model(mutate: Callable[[dict[str, Any]], None]) -> str:
    device = device_doc()
    device["metadata"]["namespace"] = "default"
    mutate(device)
    return MODEL_YAML + "---\n" + yaml.safe_dump(device)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        pytest.param(
            lambda doc: _property(doc, "setpoint").update(desired={"value": "40"}),
            "spec.properties[name=setpoint].desired.value: '40' is above the maximum 35",
            id="desired above maximum",
        ),
        pytest.param(
            lambda doc: _property(doc, "setpoint").update(desired={"value": "warm"}),
            "spec.properties[name=setpoint].desired.value: 'warm' is not a number (FLOAT)",
            id="desired of the wrong type",
        ),
        pytest.param(
            lambda doc: _property(doc, "temperature").update(
                desired={"value": "20"}, visitors={"configData": {"register": "HoldingRegister", "offset": 1}}
            ),
            "spec.properties[name=temperature].desired.value: '20' is a desired value, but the property is "
            "ReadOnly in DeviceModel default/thermostat-model",
            id="desired on ReadOnly",
        ),
        pytest.param(
            lambda doc: doc["spec"]["properties"].append({"name": "humidity"}),
            "spec.properties[name=humidity].name: 'humidity' is not a property of DeviceModel "
            "default/thermostat-model",
            id="property not in the model",
        ),
        pytest.param(
            lambda doc: doc["spec"].update(
                protocol={"protocolName": "opcua", "configData": {"url": "opc.tcp://h"}}
            ),
            "spec.protocol.protocolName: 'opcua' does not match the protocol 'modbus' of DeviceModel "
            "default/thermostat-model",
            id="protocol differs from the model's",
        ),
    ],
)
def test_device_is_cross_checked_against_its_model(
    mutate: Callable[[dict[str, Any]], None], expected: str
) -> None:
    with pytest.raises(ModelValidationError) as caught:
        load_text(_device_and_model(mutate), "devices.yaml")

    assert any(
        str(problem) == f"devices.yaml: Device default/thermostat: {expected}"
        for problem in caught.value.problems
    ), str(caught.value)


def test_cross_checks_are_a_function_for_controllers() -> None:
    document = device_doc()
    document["metadata"]["namespace"] = "default"
    device = parse_document(document)
    model = parse_document(model_doc())
    assert isinstance(device, Device)
    assert isinstance(model, DeviceModel)
    elsewhere = device.model_copy(
        update={"metadata": device.metadata.model_copy(update={"namespace": "plant-a"})}
    )
    broken = device.model_copy(deep=True)
    setpoint = broken.get_property("setpoint")
    assert setpoint is not None
    setpoint.desired = TwinProperty(value="99")

    assert check_device_against_model(device, model) == []
    problems = check_device_against_model(broken, model) + check_device_against_model(elsewhere, model)

    assert [(problem.obj, problem.path, problem.value, problem.message) for problem in problems] == [
        (
            "Device default/thermostat",
            "spec.properties[name=setpoint].desired.value",
            "99",
            "is above the maximum 35",
        ),
        (
            "Device plant-a/thermostat",
            "spec.deviceModelRef.name",
            "plant-a/thermostat-model",
            "refers to another model than DeviceModel default/thermostat-model",
        ),
    ]
    assert all(problem.has_value and problem.is_error for problem in problems)


def test_unknown_protocol_is_kept_as_it_is() -> None:
    document = device_doc()
    config = {"channel": 11, "panId": "0x1a62", "nested": {"keys": [1, 2]}}
    document["spec"]["protocol"] = {"protocolName": "zigbee", "configData": config}
    document["spec"]["properties"] = [
        {"name": "level", "visitors": {"protocolName": "zigbee", "configData": {"cluster": "0x0008"}}}
    ]
    document["spec"]["methods"] = []
    del document["status"]

    device = parse_document(document)
    assert isinstance(device, Device)

    assert check_device(device) == []
    assert device_protocol_config(device) == CustomizedConfig("zigbee", config)
    assert device.to_manifest()["spec"]["protocol"]["configData"] == config


def test_model_bounds_must_parse_and_be_ordered() -> None:
    document = model_doc()
    document["spec"]["properties"][1].update(minimum="cold", maximum="35")
    document["spec"]["properties"].append(
        {"name": "fan", "type": "INT", "minimum": "10", "maximum": "2", "accessMode": "ReadWrite"}
    )

    with pytest.raises(ModelValidationError) as caught:
        parse_document(document)

    assert [str(problem) for problem in caught.value.problems] == [
        "DeviceModel default/thermostat-model: spec.properties[name=setpoint].minimum: 'cold' is not a "
        "number (FLOAT)",
        "DeviceModel default/thermostat-model: spec.properties[name=fan].minimum: '10' is above the maximum "
        "2",
    ]


def test_unknown_property_type_is_rejected_like_the_api_server_does() -> None:
    document = model_doc()
    document["spec"]["properties"][0]["type"] = "LONG"

    with pytest.raises(
        ModelValidationError, match=r"spec.properties\[name=temperature\].type: 'LONG' is not one of INT"
    ):
        parse_document(document)
