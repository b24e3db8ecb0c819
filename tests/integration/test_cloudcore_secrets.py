"""cloudcore's CA and token key in Secrets, on the Kubernetes API fixture (real apiserver, emulator)."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest
from kubernetes import client as k8s

from cloudcore import (
    SecretError,
    SecretNotFoundError,
    load_or_create_ca,
    load_or_create_token_key,
    publish_token,
    read_ca,
    read_token_key,
)
from cloudcore.tokens import TokenPublisher
from cloudsync import CertificateAuthority, TokenAuthority
from cloudsync.token import split_token
from edgetwin.testing import wait_for
from edgetwin.testing.kubeapi import KubeApi

pytestmark = pytest.mark.kube


def _secret_data(api: k8s.ApiClient, namespace: str, name: str) -> dict[str, bytes]:
    secret = k8s.CoreV1Api(api).read_namespaced_secret(name, namespace)
    return {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}


async def test_ca_is_created_once_in_kubeedges_layout_and_loaded_back(
    kube_client: k8s.ApiClient, kube_namespace: str
) -> None:
    created = await load_or_create_ca(kube_client, kube_namespace)
    loaded = await load_or_create_ca(kube_client, kube_namespace)
    assert loaded.hash() == created.hash()
    assert loaded.key_pem() == created.key_pem()
    data = await asyncio.to_thread(_secret_data, kube_client, kube_namespace, "casecret")
    # KubeEdge's casecret: the certificate and the SEC1 key, both DER.
    assert data["cadata"] == created.cert_der()
    assert data["cakeydata"] == created.key_der()
    assert (await read_ca(kube_client, kube_namespace)).hash() == created.hash()


async def test_concurrent_replicas_share_one_ca_and_one_token_key(
    kube_api: KubeApi, kube_namespace: str
) -> None:
    with kube_api.api_client() as first, kube_api.api_client() as second:
        cas = await asyncio.gather(
            load_or_create_ca(first, kube_namespace), load_or_create_ca(second, kube_namespace)
        )
        keys = await asyncio.gather(
            load_or_create_token_key(first, kube_namespace), load_or_create_token_key(second, kube_namespace)
        )
    assert cas[0].hash() == cas[1].hash()
    assert keys[0] == keys[1]
    assert len(keys[0]) >= 32


async def test_missing_namespace_is_created(kube_client: k8s.ApiClient) -> None:
    namespace = f"kubeedge-{uuid.uuid4().hex[:8]}"
    ca = await load_or_create_ca(kube_client, namespace)
    found = await asyncio.to_thread(k8s.CoreV1Api(kube_client).read_namespace, namespace)
    assert found.metadata is not None
    assert found.metadata.name == namespace
    assert (await read_ca(kube_client, namespace)).hash() == ca.hash()


async def test_supplied_ca_is_stored_and_replaces_another(
    kube_client: k8s.ApiClient, kube_namespace: str
) -> None:
    generated = await load_or_create_ca(kube_client, kube_namespace)
    supplied = CertificateAuthority.create("my-company-ca")
    assert (await load_or_create_ca(kube_client, kube_namespace, supplied=supplied)).hash() == supplied.hash()
    assert (await read_ca(kube_client, kube_namespace)).hash() == supplied.hash() != generated.hash()
    # Without a supplied CA, a restart keeps the stored one.
    assert (await load_or_create_ca(kube_client, kube_namespace)).hash() == supplied.hash()


async def test_token_key_is_created_once_and_read_back(
    kube_client: k8s.ApiClient, kube_namespace: str
) -> None:
    key = await load_or_create_token_key(kube_client, kube_namespace)
    assert await load_or_create_token_key(kube_client, kube_namespace) == key
    assert await read_token_key(kube_client, kube_namespace) == key


async def test_reading_before_cloudcore_ever_ran_says_so(
    kube_client: k8s.ApiClient, kube_namespace: str
) -> None:
    with pytest.raises(SecretNotFoundError) as caught:
        await read_ca(kube_client, kube_namespace)
    assert str(caught.value) == f"start cloudcore first: secret {kube_namespace}/casecret not found"
    with pytest.raises(SecretNotFoundError, match="tokensecret not found"):
        await read_token_key(kube_client, kube_namespace)


async def test_a_secret_without_a_usable_ca_or_key_is_an_error(
    kube_client: k8s.ApiClient, kube_namespace: str
) -> None:
    core = k8s.CoreV1Api(kube_client)
    for name, data in (("casecret", {"cadata": "Z2FyYmFnZQ=="}), ("tokensecret", {"tokendata": "eA=="})):
        body = k8s.V1Secret(metadata=k8s.V1ObjectMeta(name=name), data=data)
        await asyncio.to_thread(core.create_namespaced_secret, kube_namespace, body)
    with pytest.raises(SecretError, match="has no cakeydata"):
        await load_or_create_ca(kube_client, kube_namespace)


async def test_kubeedges_tokensecret_gets_a_key_beside_its_token_and_a_published_token_keeps_it(
    kube_client: k8s.ApiClient, kube_namespace: str
) -> None:
    core = k8s.CoreV1Api(kube_client)
    # As KubeEdge's cloudcore leaves it: a token, no key.
    body = k8s.V1Secret(metadata=k8s.V1ObjectMeta(name="tokensecret"), data={"tokendata": "b2xk"})
    await asyncio.to_thread(core.create_namespaced_secret, kube_namespace, body)

    key = await load_or_create_token_key(kube_client, kube_namespace)

    data = await asyncio.to_thread(_secret_data, kube_client, kube_namespace, "tokensecret")
    assert (data["tokenkey"], data["tokendata"]) == (key, b"old")
    assert await load_or_create_token_key(kube_client, kube_namespace) == key  # added once

    await publish_token(kube_client, "hash.jwt", kube_namespace)
    data = await asyncio.to_thread(_secret_data, kube_client, kube_namespace, "tokensecret")
    assert (data["tokenkey"], data["tokendata"]) == (key, b"hash.jwt")
    assert await read_token_key(kube_client, kube_namespace) == key


async def test_the_token_publisher_keeps_a_valid_token_and_refreshes_it(
    kube_client: k8s.ApiClient, kube_namespace: str
) -> None:
    ca = await load_or_create_ca(kube_client, kube_namespace)
    tokens = TokenAuthority(await load_or_create_token_key(kube_client, kube_namespace), ca.hash())
    publisher = TokenPublisher(kube_client, tokens, kube_namespace, refresh=timedelta(seconds=3))

    async def published() -> str:
        data = await asyncio.to_thread(_secret_data, kube_client, kube_namespace, "tokensecret")
        return data["tokendata"].decode()

    await publisher.start()
    try:
        first = await published()
        ca_hash, jwt = split_token(first)
        assert ca_hash == ca.hash()
        tokens.verify(jwt)  # signed with the key beside it
        refreshed = await wait_for(lambda: _changed(published, first), timeout=10, what="a refreshed token")
        assert refreshed is not None
        tokens.verify(split_token(refreshed)[1])
    finally:
        await publisher.stop()


async def _changed(read: Callable[[], Awaitable[str]], before: str) -> str | None:
    now = await read()
    return now if now != before else None
