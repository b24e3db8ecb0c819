"""cloudcore's CA and token key, kept in Kubernetes Secrets so that restarts and replicas share them.

The CA Secret has KubeEdge's layout (``kubeedge/casecret``: ``cadata`` = certificate DER, ``cakeydata`` = key
DER, SEC1 for EC keys), so a CA created by KubeEdge's cloudcore is picked up as it is. The token key lives in
``kubeedge/tokensecret`` under ``tokenkey`` (added to a tokensecret KubeEdge created), and beside it, under
``tokendata`` as in KubeEdge, a ready-made token that cloudcore refreshes (what ``keadm gettoken`` and
``kubectl get secret tokensecret`` scripts read); ``edgetwin gettoken`` mints a fresh one instead.

Creation is race-safe: each replica tries to create the Secret and, when another was first (409), reads back
what that one stored. Calls go through :mod:`cloudcore.kube` (in a worker thread, errors translated).
"""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import Callable
from typing import Any, Final

from kubernetes import client as k8s

from cloudcore.errors import KubeConflictError, KubeNotFoundError, SecretError, SecretNotFoundError
from cloudcore.kube import ensure_namespace, request
from cloudsync import CertificateAuthority, CertificateFormatError
from cloudsync.pki import load_certificate
from cloudsync.token import MIN_KEY_BYTES

__all__ = [
    "CA_DATA",
    "CA_KEY_DATA",
    "CA_SECRET",
    "DEFAULT_NAMESPACE",
    "TOKEN_DATA",
    "TOKEN_KEY_DATA",
    "TOKEN_SECRET",
    "load_or_create_ca",
    "load_or_create_token_key",
    "publish_token",
    "read_ca",
    "read_token_key",
]

log = logging.getLogger(__name__)

DEFAULT_NAMESPACE: Final = "kubeedge"
CA_SECRET: Final = "casecret"
CA_DATA: Final = "cadata"
CA_KEY_DATA: Final = "cakeydata"
TOKEN_SECRET: Final = "tokensecret"
TOKEN_KEY_DATA: Final = "tokenkey"
TOKEN_DATA: Final = "tokendata"

# Create → 409 → read back can find the Secret gone again (deleted in between); a few rounds settle it.
_ATTEMPTS = 5

SecretData = dict[str, bytes]


class _Secret:
    """One Secret, read and written through :mod:`cloudcore.kube` (API errors arrive translated)."""

    def __init__(self, api: k8s.ApiClient, namespace: str, name: str) -> None:
        self._api = api
        self.namespace = namespace
        self.name = name
        self._path = f"/api/v1/namespaces/{namespace}/secrets"

    def error(self, reason: str) -> SecretError:
        return SecretError(self.namespace, self.name, reason)

    async def read(self) -> tuple[SecretData, str] | None:
        """The Secret's data (decoded) and resourceVersion, or ``None`` when it does not exist."""
        try:
            answer = await request(
                self._api, "GET", f"{self._path}/{self.name}", operation=f"read secret {self}"
            )
        except KubeNotFoundError:
            return None
        data = {key: base64.b64decode(value) for key, value in (answer.get("data") or {}).items()}
        return data, str(answer["metadata"]["resourceVersion"])

    async def create(self, data: SecretData) -> bool:
        """Create the Secret (and its namespace when missing); False when it exists already."""
        await ensure_namespace(self._api, self.namespace)
        try:
            await request(
                self._api, "POST", self._path, body=self._body(data), operation=f"create secret {self}"
            )
        except KubeConflictError:
            return False
        return True

    async def replace(self, data: SecretData, resource_version: str) -> bool:
        """Replace the Secret's data if it is still at ``resource_version``; False on a conflict."""
        try:
            await request(
                self._api,
                "PUT",
                f"{self._path}/{self.name}",
                body=self._body(data, resource_version),
                operation=f"replace secret {self}",
            )
        except KubeConflictError:
            return False
        return True

    def _body(self, data: SecretData, resource_version: str | None = None) -> dict[str, Any]:
        metadata: dict[str, str] = {"name": self.name, "namespace": self.namespace}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": metadata,
            "data": {key: base64.b64encode(value).decode("ascii") for key, value in data.items()},
        }

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def _ca_data(ca: CertificateAuthority) -> SecretData:
    return {CA_DATA: ca.cert_der(), CA_KEY_DATA: ca.key_der()}


def _new_ca_data() -> SecretData:
    return _ca_data(CertificateAuthority.create())


def _parse_ca(store: _Secret, data: SecretData) -> CertificateAuthority:
    missing = [key for key in (CA_DATA, CA_KEY_DATA) if not data.get(key)]
    if missing:
        raise store.error(f"has no {' and no '.join(missing)}: not a CA Secret")
    try:
        return CertificateAuthority.from_pem(data[CA_DATA], data[CA_KEY_DATA])
    except CertificateFormatError as exc:
        raise store.error(f"does not hold a usable CA: {exc}") from exc


def _parse_token_key(store: _Secret, data: SecretData) -> bytes:
    key = data.get(TOKEN_KEY_DATA)
    if key is None:
        raise store.error(f"has no {TOKEN_KEY_DATA}: start cloudcore once to add one")
    if len(key) < MIN_KEY_BYTES:
        raise store.error(f"{TOKEN_KEY_DATA} holds {len(key)} bytes; a token key needs {MIN_KEY_BYTES}")
    return key


async def _load_or_create(store: _Secret, fresh: Callable[[], SecretData]) -> tuple[SecretData, bool]:
    """The Secret's data, creating it from ``fresh()`` when missing; True when this call created it."""
    for _ in range(_ATTEMPTS):
        found = await store.read()
        if found is not None:
            return found[0], False
        candidate = fresh()
        if await store.create(candidate):
            return candidate, True
        # 409: another replica created it between our read and create; read theirs.
    raise store.error(f"created and deleted by others {_ATTEMPTS} times in a row; giving up")


async def _store_supplied(store: _Secret, ca: CertificateAuthority) -> None:
    """Make the Secret hold the supplied CA, replacing another (the user's choice wins, as in KubeEdge)."""
    for _ in range(_ATTEMPTS):
        found = await store.read()
        if found is None:
            if await store.create(_ca_data(ca)):
                return
            continue
        data, resource_version = found
        stored = data.get(CA_DATA)
        if stored and _same_certificate(stored, ca):
            return
        if await store.replace(_ca_data(ca), resource_version):
            log.warning(
                "replaced the CA in the Secret by the supplied one: certificates of the old CA stop working",
                extra={"namespace": store.namespace, "secret": store.name, "ca_hash": ca.hash()},
            )
            return
    raise store.error(f"changed by others {_ATTEMPTS} times in a row while storing the supplied CA")


def _same_certificate(stored: bytes, ca: CertificateAuthority) -> bool:
    try:
        return load_certificate(stored) == ca.cert
    except CertificateFormatError:
        return False


async def _read_existing_versioned(store: _Secret) -> tuple[SecretData, str]:
    found = await store.read()
    if found is None:
        raise SecretNotFoundError(store.namespace, store.name)
    return found


async def _read_existing(store: _Secret) -> SecretData:
    return (await _read_existing_versioned(store))[0]


async def load_or_create_ca(
    api: k8s.ApiClient,
    namespace: str = DEFAULT_NAMESPACE,
    *,
    name: str = CA_SECRET,
    supplied: CertificateAuthority | None = None,
) -> CertificateAuthority:
    """cloudcore's CA: the one in the Secret, or a new one stored there on the first start.

    With ``supplied`` (a CA the user gives cloudcore) the Secret is made to hold that one. Raises
    :class:`SecretError` when the Secret holds no usable CA, and :mod:`cloudcore.kube`'s errors when the
    API fails.
    """
    store = _Secret(api, namespace, name)
    if supplied is not None:
        await _store_supplied(store, supplied)
        return supplied
    data, created = await _load_or_create(store, _new_ca_data)
    ca = _parse_ca(store, data)
    log.info(
        "CA created" if created else "CA loaded",
        extra={"namespace": namespace, "secret": name, "ca_hash": ca.hash()},
    )
    return ca


async def load_or_create_token_key(
    api: k8s.ApiClient, namespace: str = DEFAULT_NAMESPACE, *, name: str = TOKEN_SECRET
) -> bytes:
    """The HMAC key of join tokens: the one in the Secret, or a new random one stored there."""
    store = _Secret(api, namespace, name)
    data, created = await _load_or_create(store, lambda: {TOKEN_KEY_DATA: secrets.token_bytes(MIN_KEY_BYTES)})
    if TOKEN_KEY_DATA not in data:
        # KubeEdge's tokensecret (a token, no key): add a key beside what it holds.
        data = await _update(
            store,
            lambda found: (
                {TOKEN_KEY_DATA: secrets.token_bytes(MIN_KEY_BYTES)} if TOKEN_KEY_DATA not in found else {}
            ),
        )
        log.info("token key added to the existing Secret", extra={"namespace": namespace, "secret": name})
    key = _parse_token_key(store, data)
    log.info(
        "token key created" if created else "token key loaded",
        extra={"namespace": namespace, "secret": name},
    )
    return key


async def publish_token(
    api: k8s.ApiClient, token: str, namespace: str = DEFAULT_NAMESPACE, *, name: str = TOKEN_SECRET
) -> None:
    """Keep ``token`` in the Secret's ``tokendata``, beside the key, where KubeEdge's tools look for it."""
    await _update(_Secret(api, namespace, name), lambda found: {TOKEN_DATA: token.encode()})


async def _update(store: _Secret, change: Callable[[SecretData], SecretData]) -> SecretData:
    """Merge ``change(data)`` into the existing Secret (retried on conflicts); the data now stored."""
    for _ in range(_ATTEMPTS):
        data, resource_version = await _read_existing_versioned(store)
        merged = data | change(data)
        if merged == data or await store.replace(merged, resource_version):
            return merged
    raise store.error(f"changed by others {_ATTEMPTS} times in a row while updating it")


async def read_ca(
    api: k8s.ApiClient, namespace: str = DEFAULT_NAMESPACE, *, name: str = CA_SECRET
) -> CertificateAuthority:
    """The CA cloudcore stored; :class:`SecretNotFoundError` when cloudcore never started."""
    store = _Secret(api, namespace, name)
    return _parse_ca(store, await _read_existing(store))


async def read_token_key(
    api: k8s.ApiClient, namespace: str = DEFAULT_NAMESPACE, *, name: str = TOKEN_SECRET
) -> bytes:
    """The token key cloudcore stored; :class:`SecretNotFoundError` when cloudcore never started."""
    store = _Secret(api, namespace, name)
    return _parse_token_key(store, await _read_existing(store))
