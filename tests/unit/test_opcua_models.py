"""OPC-UA configData as the mapper reads it: a node by nodeID or by browse path, and an optional client
certificate (the mapper makes its own when the Device names none)."""

from __future__ import annotations

from typing import Any

import pytest

from device_models import (
    OPCUA,
    ModelValidationError,
    OpcUaProtocolConfig,
    OpcUaVisitorConfig,
    SecurityMode,
    SecurityPolicy,
    parse_protocol_config,
    parse_visitor_config,
)


def problems(error: pytest.ExceptionInfo[ModelValidationError]) -> list[str]:
    return [str(problem) for problem in error.value.problems]


def test_a_node_by_browse_path() -> None:
    visitor = parse_visitor_config(OPCUA, {"browseName": "0:Objects/2:Boiler/2:Temperature"})

    assert isinstance(visitor, OpcUaVisitorConfig)
    assert visitor.node_id is None
    assert visitor.browse_path == [(0, "Objects"), (2, "Boiler"), (2, "Temperature")]


def test_with_a_node_id_the_browse_name_is_only_a_label() -> None:
    visitor = parse_visitor_config(
        OPCUA, {"nodeID": "ns=2;s=Boiler.Temperature", "browseName": "Temperature"}
    )

    assert isinstance(visitor, OpcUaVisitorConfig)
    assert visitor.browse_path is None


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, "nodeID: is required (or a browseName holding the node's browse path)"),
        (
            {"browseName": "Temperature"},
            "browseName: 'Temperature' is not a browse path from the Root folder "
            "(like 0:Objects/2:Boiler/2:Temperature)",
        ),
        ({"browseName": "0:Objects//2:T"}, "browseName: '0:Objects//2:T' is not a browse path"),
    ],
)
def test_a_visitor_without_a_usable_node_names_the_field(config: dict[str, Any], expected: str) -> None:
    with pytest.raises(ModelValidationError) as caught:
        parse_visitor_config(OPCUA, config)

    assert problems(caught)[0].startswith(expected)


def test_security_without_a_certificate_of_its_own() -> None:
    config = parse_protocol_config(
        OPCUA,
        {"url": "opc.tcp://h:4840", "securityPolicy": "Basic256Sha256", "securityMode": "SignAndEncrypt"},
    )

    assert isinstance(config, OpcUaProtocolConfig)
    assert (config.security_policy, config.security_mode) == (
        SecurityPolicy.BASIC256SHA256,
        SecurityMode.SIGN_AND_ENCRYPT,
    )
    assert config.certificate is None


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"certificate": "/etc/edgetwin/client.der"}, "privateKey: is required with certificate"),
        ({"privateKey": "/etc/edgetwin/client.pem"}, "certificate: is required with privateKey"),
    ],
)
def test_a_certificate_and_its_key_go_together(config: dict[str, Any], expected: str) -> None:
    with pytest.raises(ModelValidationError) as caught:
        parse_protocol_config(OPCUA, {"url": "opc.tcp://h:4840", **config})

    assert problems(caught) == [expected]
