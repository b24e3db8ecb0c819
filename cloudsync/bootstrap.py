"""The edge's side of certificates: join with a token, and renew the certificate before it expires.

As KubeEdge's edge certificate manager: the CA is downloaded without verification and pinned by the hash in
the token; the CSR goes to ``/edge.crt`` as the body of a GET (DER) with the ``NodeName`` header and either
``Authorization: Bearer <jwt>`` (join) or the current certificate as TLS client certificate (rotation);
the answer is the certificate, DER (PEM is accepted too).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import logging
import os
import random
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from prometheus_client import CollectorRegistry, Counter, Gauge

from cloudsync.certserver import CA_PATH, CERT_PATH, NODE_NAME_HEADER
from cloudsync.errors import (
    CaHashMismatchError,
    CertificateError,
    CertificateFormatError,
    CertificateRequestError,
    CloudSyncError,
)
from cloudsync.pki import (
    client_ssl_context,
    load_cert_chain_files,
    load_certificate,
    load_private_key,
    make_node_csr,
    node_name_of,
)
from cloudsync.token import split_token
from eventbus import Backoff, BackoffPolicy

__all__ = [
    "CertificateRotator",
    "JoinedCredentials",
    "fetch_ca",
    "join",
    "request_node_certificate",
    "write_credentials",
]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
# Enough for a certificate chain; a longer answer is not a certificate.
_MAX_ANSWER = 64 * 1024
# KubeEdge retries a failed rotation from 2 s, doubling, and then every 32 s.
ROTATION_RETRY = BackoffPolicy(minimum=2.0, maximum=32.0, factor=2.0, jitter=0.1)


@dataclass(frozen=True)
class JoinedCredentials:
    """What a join yields: the pinned CA and the node's certificate and key, all PEM."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        """The node certificate, parsed."""
        return load_certificate(self.cert_pem)


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


async def _get(
    url: str,
    *,
    ssl_context: ssl.SSLContext | bool,
    timeout: float,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> bytes:
    """GET ``url`` and return the body of a 200 answer; anything else is a CertificateRequestError."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(url, ssl=ssl_context, headers=headers, data=body) as response,
        ):
            content = await response.content.read(_MAX_ANSWER)
            if response.status != 200:
                reason = content.decode("utf-8", errors="replace").strip() or response.reason or ""
                raise CertificateRequestError(response.status, reason, url)
            return content
    except aiohttp.ClientConnectorCertificateError as exc:
        raise CertificateRequestError(
            None,
            f"the server's certificate does not verify against the pinned CA ({exc.certificate_error}); "
            "is the address one of cloudcore's advertised addresses?",
            url,
        ) from exc
    except aiohttp.ClientSSLError as exc:
        raise CertificateRequestError(
            None, f"TLS handshake failed (an expired or foreign client certificate?): {exc}", url
        ) from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise CertificateRequestError(None, str(exc) or type(exc).__name__, url) from exc


async def fetch_ca(http_server: str, expected_hash: str, *, timeout: float = DEFAULT_TIMEOUT) -> bytes:
    """Download ``<http_server>/ca.crt`` unverified and pin it: its SHA-256 must be ``expected_hash``.

    Returns the CA as PEM. Raises :class:`CaHashMismatchError` when the hash differs (a token of another
    cluster, or a man in the middle), :class:`CertificateRequestError` when the server cannot be reached.
    """
    server = http_server.rstrip("/")
    body = await _get(server + CA_PATH, ssl_context=False, timeout=timeout)
    ca = load_certificate(body, f"{server}{CA_PATH}")
    actual = hashlib.sha256(ca.public_bytes(serialization.Encoding.DER)).hexdigest()
    if actual != expected_hash.lower():
        raise CaHashMismatchError(server.removeprefix("https://"), expected_hash, actual)
    return _cert_pem(ca)


async def request_node_certificate(
    http_server: str,
    ca_pem: bytes,
    node_name: str,
    *,
    token_jwt: str | None = None,
    current_cert: tuple[Path, Path] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[bytes, bytes]:
    """Get a certificate for ``node_name`` with a fresh key: ``(cert_pem, key_pem)``.

    Authorised by ``token_jwt`` (join) or by ``current_cert`` = ``(cert_file, key_file)``, the node's
    current certificate presented as TLS client certificate (rotation). The server is verified against
    ``ca_pem``. The answer is checked: issued by the CA, for this node, for the key just made.
    """
    if (token_jwt is None) == (current_cert is None):
        raise ValueError("give exactly one of token_jwt (join) and current_cert (rotation)")
    server = http_server.rstrip("/")
    key_pem, csr_pem = make_node_csr(node_name)
    csr_der = x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER)
    headers = {NODE_NAME_HEADER: node_name, "Content-Type": "application/octet-stream"}
    context = client_ssl_context(ca_pem, None, None)
    if token_jwt is not None:
        headers["Authorization"] = f"Bearer {token_jwt}"
    if current_cert is not None:
        await asyncio.to_thread(load_cert_chain_files, context, *current_cert)
    url = server + CERT_PATH
    body = await _get(url, ssl_context=context, timeout=timeout, headers=headers, body=csr_der)
    cert = load_certificate(body, f"the answer of {url}")
    _check_issued(cert, ca_pem, key_pem, node_name)
    return _cert_pem(cert), key_pem


def _check_issued(cert: x509.Certificate, ca_pem: bytes, key_pem: bytes, node_name: str) -> None:
    """The answer must be the CA's certificate for this node and the key just made."""
    ca = load_certificate(ca_pem, "CA certificate")
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise CertificateFormatError("the issued certificate", f"not signed by the pinned CA: {exc}") from exc
    holder = node_name_of(cert)
    if holder != node_name:
        raise CertificateFormatError(
            "the issued certificate", f"it is for node {holder!r}, not {node_name!r}"
        )
    public = load_private_key(key_pem).public_key()
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(serialization.Encoding.DER, spki) != public.public_bytes(
        serialization.Encoding.DER, spki
    ):
        raise CertificateFormatError("the issued certificate", "it is not for the key of the request")


def cert_server_url(cloud_host: str, cert_port: int) -> str:
    """``https://<host>:<port>`` for a host name or an IP address (IPv6 in brackets)."""
    host = cloud_host.strip("[]")
    return f"https://[{host}]:{cert_port}" if ":" in host else f"https://{host}:{cert_port}"


async def join(
    cloud_host: str,
    token: str,
    node_name: str,
    *,
    cert_port: int = 10002,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Callable[[str], None] | None = None,
) -> JoinedCredentials:
    """Join with a token of ``edgetwin gettoken``: pin the CA at ``cloud_host:cert_port``, get a certificate.

    ``progress`` receives one line per step done (the CLI prints them). Raises
    :class:`~cloudsync.TokenInvalidError` (malformed token), :class:`CaHashMismatchError`,
    :class:`CertificateRequestError` (unreachable, or refused: ``status`` 401 and the server's reason for an
    expired or forged token).
    """
    say = progress or (lambda line: None)
    ca_hash, token_jwt = split_token(token)
    server = cert_server_url(cloud_host, cert_port)
    ca_pem = await fetch_ca(server, ca_hash, timeout=timeout)
    say(f"CA fetched from {server}{CA_PATH} and pinned: sha256 {ca_hash} as the token names")
    cert_pem, key_pem = await request_node_certificate(
        server, ca_pem, node_name, token_jwt=token_jwt, timeout=timeout
    )
    cert = load_certificate(cert_pem)
    say(
        f"certificate issued for {cert.subject.rfc4514_string()}, "
        f"valid until {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"
    )
    return JoinedCredentials(ca_pem, cert_pem, key_pem)


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` by ``data`` in one step: readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), mode)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_credentials(
    cert_file: Path,
    key_file: Path,
    cert_pem: bytes,
    key_pem: bytes,
    *,
    ca_file: Path | None = None,
    ca_pem: bytes | None = None,
) -> None:
    """Write the node's key (mode 0600), certificate and, when given, the CA (0644), each atomically.

    The key is replaced before the certificate: a reader between the two sees a pair that does not match
    and retries, rather than a new certificate with a key that cannot use it going unnoticed.
    """
    if ca_file is not None and ca_pem is not None:
        _write_atomically(ca_file, ca_pem, 0o644)
    _write_atomically(key_file, key_pem, 0o600)
    _write_atomically(cert_file, cert_pem, 0o644)


class CertificateRotator:
    """Renews the node certificate before it expires, a supervised module of edgecore.

    The renewal falls at ``renew_fraction`` of the certificate's lifetime, give or take ``jitter`` (KubeEdge
    renews at 70-90 %, so that nodes joined together do not all renew at once). The request is authorised by
    the current certificate; the new key and certificate replace the files atomically, then ``on_rotated``
    runs (EdgeHub reconnects with them). A failed renewal is retried with backoff (2 s doubling to 32 s)
    until it succeeds; once the certificate has expired only a new join can help, which the log says.
    """

    name = "certrotator"

    def __init__(
        self,
        http_server: str,
        ca_file: Path,
        cert_file: Path,
        key_file: Path,
        node_name: str,
        *,
        on_rotated: Callable[[], Awaitable[None]] | None = None,
        renew_fraction: float = 0.8,
        jitter: float = 0.1,
        retry: BackoffPolicy = ROTATION_RETRY,
        registry: CollectorRegistry | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if not 0 < renew_fraction < 1:
            raise ValueError(f"renew_fraction must lie strictly between 0 and 1, got {renew_fraction}")
        if not 0 <= jitter < min(renew_fraction, 1 - renew_fraction):
            raise ValueError("jitter must be at least 0 and keep renew_fraction ± jitter within 0..1")
        self._http_server = http_server
        self._ca_file, self._cert_file, self._key_file = ca_file, cert_file, key_file
        self._node = node_name
        self._on_rotated = on_rotated
        self._fraction = renew_fraction
        self._jitter = jitter
        self._retry = retry
        self._timeout = timeout
        self._task: asyncio.Task[None] | None = None
        self.next_rotation: datetime.datetime | None = None
        """When the next renewal is due (UTC), once started."""
        self._rotations = Counter(
            "edgetwin_certificate_rotations",
            "Renewals of the node certificate, by result",
            ["result"],
            registry=registry,
        )
        self._expiry = Gauge(
            "edgetwin_certificate_expiry_timestamp_seconds",
            "When the node certificate in use expires (Unix seconds)",
            registry=registry,
        )
        for result in ("success", "failure"):
            self._rotations.labels(result=result)

    async def start(self) -> None:
        """Read the current certificate (it must exist: ``edgetwin join`` wrote it) and schedule renewals."""
        due = self._schedule(await asyncio.to_thread(self._current))
        self._task = asyncio.create_task(self._run(due), name="certrotator")

    async def stop(self) -> None:
        """Stop renewing; idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])

    async def wait(self) -> None:
        """Return when the renewal loop ends: raises what made it fail (``on_rotated`` raising)."""
        task = self._task
        if task is None:
            return
        await asyncio.wait([task])
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error

    def _current(self) -> x509.Certificate:
        try:
            data = self._cert_file.read_bytes()
        except OSError as exc:
            raise CertificateFormatError(
                str(self._cert_file),
                f"cannot read it ({exc.strerror or exc}): join first with `edgetwin join`",
            ) from exc
        return load_certificate(data, str(self._cert_file))

    def _schedule(self, cert: x509.Certificate) -> datetime.datetime:
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        fraction = self._fraction + random.uniform(-self._jitter, self._jitter)
        due = self.next_rotation = start + (end - start) * fraction
        self._expiry.set(end.timestamp())
        log.info(
            "certificate renewal scheduled",
            extra={"node": self._node, "not_after": end.isoformat(), "renew_at": due.isoformat()},
        )
        return due

    async def _run(self, due: datetime.datetime) -> None:
        while True:
            delay = (due - datetime.datetime.now(datetime.UTC)).total_seconds()
            if delay > 0:
                await asyncio.sleep(delay)
            due = self._schedule(await self._rotate())
            if self._on_rotated is not None:
                await self._on_rotated()

    async def _rotate(self) -> x509.Certificate:
        backoff = Backoff(self._retry)
        while True:
            try:
                return await self._rotate_once()
            except CloudSyncError as exc:
                self._rotations.labels(result="failure").inc()
                delay = backoff.next_delay()
                expired = datetime.datetime.now(datetime.UTC) >= await asyncio.to_thread(self._expires)
                log.warning(
                    "certificate renewal failed%s: %s",
                    "; the certificate has expired: join again with `edgetwin join`" if expired else "",
                    exc,
                    extra={"node": self._node, "retry_in_s": round(delay, 3), "attempt": backoff.attempts},
                )
                await asyncio.sleep(delay)

    def _expires(self) -> datetime.datetime:
        try:
            return self._current().not_valid_after_utc
        except CertificateError:
            return datetime.datetime.now(datetime.UTC)

    async def _rotate_once(self) -> x509.Certificate:
        try:
            ca_pem = await asyncio.to_thread(self._ca_file.read_bytes)
        except OSError as exc:
            raise CertificateFormatError(
                str(self._ca_file), f"cannot read it: {exc.strerror or exc}"
            ) from exc
        cert_pem, key_pem = await request_node_certificate(
            self._http_server,
            ca_pem,
            self._node,
            current_cert=(self._cert_file, self._key_file),
            timeout=self._timeout,
        )
        await asyncio.to_thread(write_credentials, self._cert_file, self._key_file, cert_pem, key_pem)
        self._rotations.labels(result="success").inc()
        cert = load_certificate(cert_pem)
        log.info(
            "certificate renewed",
            extra={
                "node": self._node,
                "serial": f"{cert.serial_number:x}",
                "not_after": cert.not_valid_after_utc.isoformat(),
            },
        )
        return cert
