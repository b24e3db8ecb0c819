"""The OPC-UA mapper: asyncua sessions with subscriptions (else polling), plugged into the mapper SDK."""

from mappers.opcua.browse import VariableRow, browse_endpoint, browse_table, browse_variables, format_table
from mappers.opcua.certificates import (
    ClientCertificate,
    certificate_application_uri,
    default_application_uri,
    default_cert_dir,
    ensure_client_certificate,
    generate_certificate,
    load_certificate,
)
from mappers.opcua.codec import SCALAR_TYPES, decode, encode
from mappers.opcua.driver import PROTOCOL_NAME, OpcUaDriver, OpcUaProtocol, OpcUaSettings
from mappers.opcua.errors import (
    CertificateError,
    OpcUaStatusError,
    ValueDecodeError,
    WriteRefusedError,
)
from mappers.opcua.session import SessionOptions, open_session, quiet_asyncua

__all__ = [
    "PROTOCOL_NAME",
    "SCALAR_TYPES",
    "CertificateError",
    "ClientCertificate",
    "OpcUaDriver",
    "OpcUaProtocol",
    "OpcUaSettings",
    "OpcUaStatusError",
    "SessionOptions",
    "ValueDecodeError",
    "VariableRow",
    "WriteRefusedError",
    "browse_endpoint",
    "browse_table",
    "browse_variables",
    "certificate_application_uri",
    "decode",
    "default_application_uri",
    "default_cert_dir",
    "encode",
    "ensure_client_certificate",
    "format_table",
    "generate_certificate",
    "load_certificate",
    "open_session",
    "quiet_asyncua",
]
