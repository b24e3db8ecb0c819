"""cloudcore's certificate service (HTTPS, port 10002 by default), as KubeEdge's cloudhub ``httpserver``.

* ``GET /ca.crt``: the CA certificate, DER (``application/pkix-cert``). The client cannot verify the server
  yet; it pins the CA by the hash in its token instead.
* ``GET /edge.crt`` (``POST`` too, for HTTP tools that drop a GET body): the body is a CSR (DER as KubeEdge
  sends it, or PEM), the ``NodeName`` header names the node. The request is authorised either by
  ``Authorization: Bearer <jwt>`` (join) or by a client certificate of that same node (rotation); the
  answer is the signed certificate, DER. Refusals answer ``text/plain`` with the reason: 401 for a missing,
  expired or forged token, 403 for a certificate of another node, 400 for a bad CSR or header.

The client certificate is optional at the TLS level, and verified against the CA when presented (a
certificate from elsewhere fails the handshake).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from enum import StrEnum
from typing import Final

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from prometheus_client import CollectorRegistry, Counter

from cloudsync.errors import (
    CertServerError,
    CsrRejectedError,
    NodeIdentityError,
    TokenError,
    TokenExpiredError,
)
from cloudsync.pki import CertificateAuthority, check_node_name, node_name_of, server_ssl_context
from cloudsync.token import TokenAuthority
from serving import join_host_port, start_site

__all__ = ["CA_PATH", "CERT_PATH", "NODE_NAME_HEADER", "CertServer"]

log = logging.getLogger(__name__)

CA_PATH: Final = "/ca.crt"
CERT_PATH: Final = "/edge.crt"
NODE_NAME_HEADER: Final = "NodeName"

_DER_CERT = "application/pkix-cert"
# A CSR is a few hundred bytes; anything much larger is not one.
_MAX_BODY = 64 * 1024


class _Refusal(StrEnum):
    """Why a certificate request was refused: the ``reason`` label of the refusals counter."""

    MISSING_TOKEN = "missing_token"
    EXPIRED_TOKEN = "expired_token"
    INVALID_TOKEN = "invalid_token"
    NODE_MISMATCH = "node_mismatch"
    BAD_REQUEST = "bad_request"
    BAD_CSR = "bad_csr"


class _Refused(Exception):
    """Internal: ends a request with ``status`` and ``reason`` (the response body)."""

    def __init__(self, status: int, kind: _Refusal, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.kind = kind
        self.reason = reason


class CertServer:
    """The HTTPS certificate service, a supervised module (``start`` / ``stop`` / ``wait``).

    ``port`` 0 lets the OS choose (read :attr:`port` after :meth:`start`). ``cert_days`` is the lifetime of
    the node certificates it signs (fractions of a day are fine, for tests of rotation).
    """

    name = "certserver"

    def __init__(
        self,
        ca: CertificateAuthority,
        tokens: TokenAuthority,
        *,
        host: str,
        port: int,
        server_cert_pem: bytes,
        server_key_pem: bytes,
        registry: CollectorRegistry | None = None,
        cert_days: float = 365,
    ) -> None:
        self._ca = ca
        self._ca_der = ca.cert_der()
        self._tokens = tokens
        self._host = host
        self._requested_port = port
        self._server_cert_pem = server_cert_pem
        self._server_key_pem = server_key_pem
        self._cert_days = cert_days
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._stopped = asyncio.Event()
        self._requests = Counter(
            "edgetwin_certserver_requests",
            "Requests to the certificate service, by endpoint",
            ["endpoint"],
            registry=registry,
        )
        self._issued = Counter(
            "edgetwin_certserver_certificates_issued",
            "Node certificates signed, by what authorised the request (token: join, certificate: rotation)",
            ["auth"],
            registry=registry,
        )
        self._refusals = Counter(
            "edgetwin_certserver_refusals",
            "Certificate requests refused, by reason",
            ["reason"],
            registry=registry,
        )
        for kind in _Refusal:
            self._refusals.labels(reason=kind.value)

    @property
    def address(self) -> str:
        """``host:port`` as configured (IPv6 in brackets)."""
        return join_host_port(self._host, self._port if self._port is not None else self._requested_port)

    @property
    def port(self) -> int:
        """The port bound (differs from the configured one when that was 0)."""
        if self._port is None:
            raise CertServerError(self.address, "the server is not started")
        return self._port

    @property
    def url(self) -> str:
        """``https://host:port``: what edges put in ``modules.edgeHub.httpServer``."""
        return f"https://{self.address}"

    async def start(self) -> None:
        """Bind and serve; raises :class:`CertServerError` if the address cannot be bound."""
        context = server_ssl_context(
            self._ca.cert_pem(), self._server_cert_pem, self._server_key_pem, require_client_cert=False
        )
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_get(CA_PATH, self._get_ca)
        app.router.add_get(CERT_PATH, self._edge_cert)
        app.router.add_post(CERT_PATH, self._edge_cert)
        runner = web.AppRunner(app, access_log=None)
        self._port = await start_site(
            runner,
            self._host,
            self._requested_port,
            ssl_context=context,
            error=lambda reason: CertServerError(self.address, reason),
        )
        self._runner = runner
        self._stopped.clear()
        log.info("certificate service listening", extra={"url": self.url, "ca_hash": self._tokens.ca_hash})

    async def stop(self) -> None:
        """Stop serving; idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self._stopped.set()

    async def wait(self) -> None:
        """Block while the service runs (it has no failure of its own after start); return on stop."""
        await self._stopped.wait()

    async def _get_ca(self, request: web.Request) -> web.Response:
        self._requests.labels(endpoint=CA_PATH).inc()
        return web.Response(body=self._ca_der, content_type=_DER_CERT)

    async def _edge_cert(self, request: web.Request) -> web.Response:
        self._requests.labels(endpoint=CERT_PATH).inc()
        node = request.headers.get(NODE_NAME_HEADER, "")
        try:
            auth = self._authorise(request, node)
            csr = await request.read()
            try:
                cert = self._ca.sign_node_csr(csr, node, days=self._cert_days)
            except CsrRejectedError as exc:
                raise _Refused(400, _Refusal.BAD_CSR, exc.reason) from exc
        except web.HTTPRequestEntityTooLarge as exc:
            return self._refuse(request, node, _Refused(413, _Refusal.BAD_CSR, exc.text or "body too large"))
        except _Refused as refused:
            return self._refuse(request, node, refused)
        self._issued.labels(auth=auth).inc()
        log.info(
            "node certificate issued",
            extra={
                "node": node,
                "auth": auth,
                "serial": f"{cert.serial_number:x}",
                "not_after": cert.not_valid_after_utc.isoformat(),
            },
        )
        return web.Response(body=cert.public_bytes(serialization.Encoding.DER), content_type=_DER_CERT)

    def _authorise(self, request: web.Request, node: str) -> str:
        """Check the request may get a certificate for ``node``; the kind of proof (token or certificate)."""
        if not node:
            raise _Refused(400, _Refusal.BAD_REQUEST, f"the {NODE_NAME_HEADER} header is missing")
        try:
            check_node_name(node)
        except NodeIdentityError as exc:
            raise _Refused(400, _Refusal.BAD_REQUEST, f"{NODE_NAME_HEADER}: {exc.reason}") from exc
        peer = _peer_certificate(request)
        if peer is not None:
            # Rotation: TLS already verified the certificate against the CA (chain and expiry).
            try:
                holder = node_name_of(peer)
            except NodeIdentityError as exc:
                raise _Refused(403, _Refusal.NODE_MISMATCH, f"client certificate: {exc}") from exc
            if holder != node:
                raise _Refused(
                    403,
                    _Refusal.NODE_MISMATCH,
                    f"the client certificate is node {holder!r}'s; it cannot renew node {node!r}'s",
                )
            return "certificate"
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Refused(
                401,
                _Refusal.MISSING_TOKEN,
                "no token: send `Authorization: Bearer <token>` with a token from `edgetwin gettoken`, "
                "or a client certificate of this node to renew it",
            )
        try:
            self._tokens.verify(token.strip())
        except TokenError as exc:
            kind = _Refusal.EXPIRED_TOKEN if isinstance(exc, TokenExpiredError) else _Refusal.INVALID_TOKEN
            raise _Refused(401, kind, str(exc)) from exc
        return "token"

    def _refuse(self, request: web.Request, node: str, refused: _Refused) -> web.Response:
        self._refusals.labels(reason=refused.kind.value).inc()
        log.warning(
            "certificate request refused: %s",
            refused.reason,
            extra={"node": node or None, "peer": request.remote, "status": refused.status},
        )
        return web.Response(status=refused.status, text=refused.reason)


def _peer_certificate(request: web.Request) -> x509.Certificate | None:
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der) if der else None
