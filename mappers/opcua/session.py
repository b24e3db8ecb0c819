"""Opening an OPC-UA session as a Device's configData asks: endpoint, security, certificate, login.

The server's endpoints are read first (GetEndpoints on an unsecured channel, as every OPC-UA client does),
so a security policy, mode or login the server does not offer is reported with what it does offer, instead
of a bare "no matching endpoint". asyncua's exceptions stop here: a server that cannot be reached (or answers
nothing useful) is :class:`~mappers.sdk.DeviceUnreachableError`; one that refuses the login, the certificate
or the security settings is :class:`~mappers.sdk.DeviceRejectedError`, naming the field to check and what to
do about it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncua import Client, ua
from asyncua.crypto import security_policies
from asyncua.observer import Observer

from device_models import OpcUaProtocolConfig, SecurityMode, SecurityPolicy
from mappers.opcua.certificates import ClientCertificate, default_application_uri
from mappers.opcua.errors import CertificateError
from mappers.sdk import DeviceRejectedError, DeviceUnreachableError, MapperError

CertificateSource = Callable[[OpcUaProtocolConfig], Awaitable[ClientCertificate]]
"""Gives the client certificate for a device: the one its configData names, or the mapper's own."""
LostCallback = Callable[[Exception], Coroutine[Any, Any, None]]

POLICIES: dict[SecurityPolicy, type[security_policies.SecurityPolicy]] = {
    SecurityPolicy.NONE: security_policies.SecurityPolicyNone,
    SecurityPolicy.BASIC128RSA15: security_policies.SecurityPolicyBasic128Rsa15,
    SecurityPolicy.BASIC256: security_policies.SecurityPolicyBasic256,
    SecurityPolicy.BASIC256SHA256: security_policies.SecurityPolicyBasic256Sha256,
    SecurityPolicy.AES128_SHA256_RSAOAEP: security_policies.SecurityPolicyAes128Sha256RsaOaep,
    SecurityPolicy.AES256_SHA256_RSAPSS: security_policies.SecurityPolicyAes256Sha256RsaPss,
}
MODES = {
    SecurityMode.NONE: ua.MessageSecurityMode.None_,
    SecurityMode.SIGN: ua.MessageSecurityMode.Sign,
    SecurityMode.SIGN_AND_ENCRYPT: ua.MessageSecurityMode.SignAndEncrypt,
}
SESSION_TIMEOUT_MS = 60_000
"""How long a server keeps the session of a mapper that went away without closing it."""
CONNECTION_ERRORS = (ua.UaError, OSError, TimeoutError)
"""What asyncua raises when a request fails (ConnectionError is an OSError)."""

_LOGIN_REFUSED = frozenset(
    {
        ua.StatusCodes.BadUserAccessDenied,
        ua.StatusCodes.BadIdentityTokenInvalid,
        ua.StatusCodes.BadIdentityTokenRejected,
        ua.StatusCodes.BadUserSignatureInvalid,
    }
)
_CERTIFICATE_HINTS = {
    ua.StatusCodes.BadCertificateUntrusted: "the server does not trust it: add it to its trusted list",
    ua.StatusCodes.BadCertificateUriInvalid: "its application URI is not the one the server expects",
    ua.StatusCodes.BadCertificateTimeInvalid: "it is expired or not valid yet",
    ua.StatusCodes.BadCertificateRevoked: "the server revoked it",
    ua.StatusCodes.BadCertificateUseNotAllowed: "its key usage does not allow this use",
    ua.StatusCodes.BadCertificateHostNameInvalid: "its host name is not the one the server expects",
}
_SECURITY_REFUSED = frozenset(
    {
        *_CERTIFICATE_HINTS,
        ua.StatusCodes.BadCertificateInvalid,
        ua.StatusCodes.BadCertificateIssuerRevoked,
        ua.StatusCodes.BadCertificateRevocationUnknown,
        ua.StatusCodes.BadCertificatePolicyCheckFailed,
        ua.StatusCodes.BadSecurityChecksFailed,
        ua.StatusCodes.BadSecurityPolicyRejected,
        ua.StatusCodes.BadSecurityModeRejected,
        ua.StatusCodes.BadNoValidCertificates,
        ua.StatusCodes.BadApplicationSignatureInvalid,
    }
)
_CONFIG = "spec.protocol.configData"


@dataclass(frozen=True)
class SessionOptions:
    """How the mapper opens sessions (the same for every device)."""

    certificate: CertificateSource
    timeout: float = 5.0
    """Seconds to wait for each answer of the server (a device's ``timeout`` overrides it)."""
    keepalive: float = 5.0
    """Seconds between two checks that an idle session is still alive."""
    observer: Observer | None = None
    """Sees every request (to count and time them)."""
    lost: LostCallback | None = None
    """Called when the connection is lost after the session was up."""


def quiet_asyncua(level: int = logging.CRITICAL) -> None:
    """Set asyncua's own log level, for a mapper process.

    asyncua logs a lost connection at ERROR with a traceback per failed request; the mapper reports the same
    event itself (the device's state, one line with the reason), so only debugging needs asyncua's lines.
    """
    logging.getLogger("asyncua").setLevel(level)


def policy_name(uri: str) -> str:
    """``Basic256Sha256`` for ``http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256``."""
    return uri.rpartition("#")[2]


async def open_session(device: str, config: OpcUaProtocolConfig, options: SessionOptions) -> Client:
    """A connected client with an activated session; raises the SDK's errors (see the module docstring)."""
    client = Client(
        config.url, timeout=config.timeout or options.timeout, watchdog_intervall=options.keepalive
    )
    client.name = client.description = "edgetwin OPC-UA mapper"
    client.product_uri = "urn:edgetwin:opcua-mapper"
    client.application_uri = default_application_uri()
    client.session_timeout = SESSION_TIMEOUT_MS
    if options.observer is not None:
        client.uaclient.observer = options.observer
    client.connection_lost_callback = options.lost
    certificate: ClientCertificate | None = None
    try:
        endpoint = await _endpoint(device, client, config)
        if config.security_policy is not SecurityPolicy.NONE:
            certificate = await options.certificate(config)
            client.application_uri = certificate.application_uri
            await client.set_security(
                POLICIES[config.security_policy],
                str(certificate.certificate),
                str(certificate.private_key),
                server_certificate=endpoint.ServerCertificate,
                mode=MODES[config.security_mode],
            )
        if config.user_name:
            client.set_user(config.user_name)
        if config.password is not None:
            client.set_password(config.password.get_secret_value())
        await client.connect()
    except CertificateError as exc:
        raise DeviceRejectedError(device, _certificate_field(config, exc), str(exc)) from exc
    except CONNECTION_ERRORS as exc:
        raise _connect_error(device, config, certificate, exc) from exc
    return client


async def _endpoint(device: str, client: Client, config: OpcUaProtocolConfig) -> ua.EndpointDescription:
    endpoints = await client.connect_and_get_server_endpoints()
    uri, mode = POLICIES[config.security_policy].URI, MODES[config.security_mode]
    matching = [ep for ep in endpoints if ep.SecurityPolicyUri == uri and ep.SecurityMode == mode]
    if not matching:
        offered = sorted(
            {f"{policy_name(ep.SecurityPolicyUri)}/{ep.SecurityMode.name.rstrip('_')}" for ep in endpoints}
        )
        raise DeviceRejectedError(
            device,
            f"{_CONFIG}.securityPolicy/securityMode",
            f"{config.url} offers no endpoint with securityPolicy {config.security_policy} and securityMode "
            f"{config.security_mode}; it offers (policy/mode) {', '.join(offered) or 'none'}",
        )
    endpoint = matching[0]
    tokens = {token.TokenType for token in endpoint.UserIdentityTokens}
    if config.user_name and ua.UserTokenType.UserName not in tokens:
        raise DeviceRejectedError(
            device,
            f"{_CONFIG}.userName",
            f"{config.url} does not accept a user name and password on this endpoint",
        )
    if not config.user_name and ua.UserTokenType.Anonymous not in tokens:
        raise DeviceRejectedError(
            device,
            f"{_CONFIG}.userName",
            f"{config.url} refuses anonymous sessions: set userName and password",
        )
    return endpoint


def _certificate_field(config: OpcUaProtocolConfig, error: CertificateError) -> str | None:
    if config.certificate is None:
        return None  # the mapper's own certificate: the message names its file
    if config.private_key is not None and error.path == Path(config.private_key):
        return f"{_CONFIG}.privateKey"
    return f"{_CONFIG}.certificate"


def _connect_error(
    device: str, config: OpcUaProtocolConfig, certificate: ClientCertificate | None, error: Exception
) -> MapperError:
    if not isinstance(error, ua.UaStatusCodeError):
        reason = str(error) or type(error).__name__
        return DeviceUnreachableError(device, f"cannot connect to {config.url}: {reason}")
    status = ua.StatusCode(error.code)
    if error.code in _LOGIN_REFUSED:
        if config.user_name:
            who, fix = f"user {config.user_name!r}", "check userName and password"
        else:
            who, fix = "an anonymous session", "set userName and password"
        return DeviceRejectedError(
            device, f"{_CONFIG}.userName/password", f"{config.url} refused {who} ({status.name}): {fix}"
        )
    if error.code in _SECURITY_REFUSED:
        hint = _CERTIFICATE_HINTS.get(error.code, "check the certificate and the security settings")
        which = "the secure channel"
        if certificate is not None:
            which = f"the client certificate {certificate.certificate} ({certificate.application_uri})"
        return DeviceRejectedError(
            device, f"{_CONFIG}.certificate", f"{config.url} refused {which} ({status.name}): {hint}"
        )
    return DeviceUnreachableError(device, f"{config.url} answered {status.name}")
