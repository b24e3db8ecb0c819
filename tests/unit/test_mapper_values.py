"""Twin strings <-> driver values and desired-value checks."""

from __future__ import annotations

import pytest

from device_models import ModbusVisitorConfig, ModelProperty
from mappers.sdk import (
    PropertyConfig,
    PropertyError,
    ValueRefusedError,
    format_reported,
    parse_desired,
    reported_text,
)


def prop(type_: str, access: str = "ReadWrite", **bounds: str) -> PropertyConfig:
    model = ModelProperty.model_validate({"name": "p", "type": type_, "accessMode": access, **bounds})
    visitor = ModbusVisitorConfig.model_validate({"register": "HoldingRegister", "offset": 0})
    return PropertyConfig("p", model, visitor)


@pytest.mark.parametrize(
    ("type_", "value", "text"),
    [
        ("FLOAT", 21.5, "21.5"),
        ("FLOAT", 7, "7"),
        ("DOUBLE", -0.001, "-0.001"),
        ("INT", 42, "42"),
        ("INT", 21.6, "22"),  # a scaled reading reported as an INT property: the nearest integer
        ("BOOLEAN", True, "true"),
        ("BOOLEAN", 0, "false"),
        ("STRING", "abc", "abc"),
        ("BYTES", b"\x01\xab", "01ab"),
    ],
)
def test_reported_values_are_twin_strings(type_: str, value: object, text: str) -> None:
    assert format_reported("ns/d", prop(type_), value) == text  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("type_", "value", "reason"),
    [
        ("STRING", "two words", "value must be"),  # the twin's value pattern has no spaces
        ("INT", "12", "is not a number"),
        ("BOOLEAN", "on", "is not a boolean"),
    ],
)
def test_values_the_twin_cannot_hold_are_property_errors(type_: str, value: object, reason: str) -> None:
    with pytest.raises(PropertyError, match=reason) as caught:
        format_reported("ns/d", prop(type_), value)  # type: ignore[arg-type]
    assert caught.value.device == "ns/d"
    assert caught.value.property == "p"


def test_reported_text_passes_on_the_driver_error() -> None:
    error = PropertyError("ns/d", "p", "device busy")
    with pytest.raises(PropertyError) as caught:
        reported_text("ns/d", prop("INT"), error)
    assert caught.value is error
    with pytest.raises(PropertyError, match="no reading"):
        reported_text("ns/d", prop("INT"), None)


@pytest.mark.parametrize(
    ("type_", "text", "value"),
    [
        ("FLOAT", "21.5", 21.5),
        ("INT", "-3", -3),
        ("BOOLEAN", "true", True),
        ("STRING", "eco", "eco"),
        ("BYTES", "01ff", b"\x01\xff"),
    ],
)
def test_desired_values_parse_as_the_model_type(type_: str, text: str, value: object) -> None:
    assert parse_desired("ns/d", prop(type_), text) == value


@pytest.mark.parametrize(
    ("config", "text", "reason"),
    [
        (prop("FLOAT", minimum="5", maximum="35"), "40", "above the maximum 35"),
        (prop("FLOAT", minimum="5", maximum="35"), "4.9", "below the minimum 5"),
        (prop("FLOAT"), "warm", "is not a number"),
        (prop("INT"), "1.5", "is not an integer"),
        (prop("BOOLEAN"), "True", "exactly true or false"),
        (prop("FLOAT", access="ReadOnly"), "20", "ReadOnly"),
        (prop("BYTES"), "xyz", "hex"),
    ],
)
def test_desired_values_refused_with_the_reason(config: PropertyConfig, text: str, reason: str) -> None:
    with pytest.raises(ValueRefusedError, match=reason) as caught:
        parse_desired("ns/d", config, text)
    assert caught.value.value == text
    assert caught.value.property == "p"
