"""OPC-UA configData of a device (endpoint, security, credentials) and of a property visitor (node id)."""

from __future__ import annotations

import enum
import re
from typing import Annotated, Self
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator

from device_models.base import ConfigModel
from device_models.problems import field_error

_POLICY_URI_PREFIX = "http://opcfoundation.org/ua/securitypolicy#"
# ns=<index>; or nsu=<uri>; then i= (numeric), s= (string), g= (guid) or b= (opaque, base64).
_NODE_ID = re.compile(
    r"^((ns=\d+|nsu=[^;]+);)?(i=\d+|s=.+|g=[0-9A-Fa-f]{8}(-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}|b=.+)$"
)
# KubeEdge's own docs write "ns=1,i=1005"; OPC-UA (and asyncua) separate with ";".
_COMMA_NODE_ID = re.compile(r"^(ns=\d+),([isgb]=.+)$")
# A browse path from the Root folder: <namespace index>:<browse name> segments joined by "/".
_BROWSE_PATH = re.compile(r"^\d+:[^/]+(/\d+:[^/]+)*$")


class SecurityPolicy(enum.StrEnum):
    """OPC-UA security policies (the URI fragment after ``SecurityPolicy#``)."""

    NONE = "None"
    BASIC128RSA15 = "Basic128Rsa15"
    BASIC256 = "Basic256"
    BASIC256SHA256 = "Basic256Sha256"
    AES128_SHA256_RSAOAEP = "Aes128_Sha256_RsaOaep"
    AES256_SHA256_RSAPSS = "Aes256_Sha256_RsaPss"


class SecurityMode(enum.StrEnum):
    """OPC-UA message security modes."""

    NONE = "None"
    SIGN = "Sign"
    SIGN_AND_ENCRYPT = "SignAndEncrypt"


def _enum_spelling(choices: type[enum.StrEnum]) -> BeforeValidator:
    """Accept any letter case and the full policy URI; KubeEdge's default spelling is "none"."""
    lookup = {member.value.lower(): member.value for member in choices}

    def normalize(value: object) -> object:
        if not isinstance(value, str):
            return value
        key = value.lower().removeprefix(_POLICY_URI_PREFIX)
        return lookup.get(key, value)

    return BeforeValidator(normalize)


class OpcUaProtocolConfig(ConfigModel):
    """``spec.protocol.configData`` of an OPC-UA device. ``password`` never shows in reprs or logs."""

    url: str
    """The server endpoint, e.g. opc.tcp://127.0.0.1:4840/edgetwin/boiler."""
    user_name: str | None = None
    """User for user/password authentication (anonymous without)."""
    password: SecretStr | None = None
    """Password of userName."""
    security_policy: Annotated[SecurityPolicy, _enum_spelling(SecurityPolicy)] = SecurityPolicy.NONE
    """None, Basic256Sha256, Aes128_Sha256_RsaOaep, ... (any letter case)."""
    security_mode: Annotated[SecurityMode, _enum_spelling(SecurityMode)] = SecurityMode.NONE
    """None, Sign or SignAndEncrypt."""
    certificate: str | None = None
    """Path of the client certificate on the edge node; without it the mapper uses its own certificate."""
    private_key: str | None = None
    """Path of the client private key on the edge node (with certificate)."""
    timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Connection timeout in seconds."""

    @field_validator("url")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "opc.tcp" or not parts.hostname:
            raise ValueError("is not an OPC-UA endpoint (opc.tcp://host:port/path)")
        try:
            _ = parts.port
        except ValueError:
            raise ValueError("has an invalid port") from None
        return value

    @model_validator(mode="after")
    def _security(self) -> Self:
        secure_policy = self.security_policy is not SecurityPolicy.NONE
        secure_mode = self.security_mode is not SecurityMode.NONE
        if secure_mode and not secure_policy:
            raise field_error(
                "securityPolicy", f"must name a policy when securityMode is {self.security_mode}", "None"
            )
        if secure_policy and not secure_mode:
            raise field_error(
                "securityMode",
                f"must be Sign or SignAndEncrypt with securityPolicy {self.security_policy}",
                "None",
            )
        if self.private_key and not self.certificate:
            raise field_error("certificate", "is required with privateKey")
        if self.certificate and not self.private_key:
            raise field_error("privateKey", "is required with certificate")
        if self.password is not None and not self.user_name:
            raise field_error("userName", "is required when a password is given")
        return self


def _node_id(value: object) -> object:
    if isinstance(value, str) and (match := _COMMA_NODE_ID.match(value)):
        return f"{match.group(1)};{match.group(2)}"
    return value


class OpcUaVisitorConfig(ConfigModel):
    """``spec.properties[].visitors.configData`` of an OPC-UA device property."""

    node_id: Annotated[str | None, BeforeValidator(_node_id)] = Field(default=None, alias="nodeID")
    """The node, e.g. ns=2;s=Boiler.Temperature (KubeEdge's "ns=2,i=1005" form is accepted too)."""
    browse_name: str | None = Field(default=None, alias="browseName")
    """The node's browse name, for humans; without nodeID, the node's browse path from the Root folder,
    e.g. 0:Objects/2:Boiler/2:Temperature."""

    @field_validator("node_id")
    @classmethod
    def _node_id_syntax(cls, value: str | None) -> str | None:
        if value is not None and not _NODE_ID.match(value):
            raise ValueError("is not an OPC-UA node id (like ns=2;s=Name or ns=2;i=1005)")
        return value

    @model_validator(mode="after")
    def _node(self) -> Self:
        if self.node_id is None and self.browse_name is None:
            raise field_error("nodeID", "is required (or a browseName holding the node's browse path)")
        if self.node_id is None and not _BROWSE_PATH.match(str(self.browse_name)):
            raise field_error(
                "browseName",
                "is not a browse path from the Root folder (like 0:Objects/2:Boiler/2:Temperature)",
                self.browse_name,
            )
        return self

    @property
    def browse_path(self) -> list[tuple[int, str]] | None:
        """The (namespace index, browse name) segments of the node's browse path, when no nodeID is given."""
        if self.node_id is not None or self.browse_name is None:
            return None
        segments = (segment.split(":", 1) for segment in self.browse_name.split("/"))
        return [(int(index), name) for index, name in segments]
