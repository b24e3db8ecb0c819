"""gettoken → join against a running certificate service: files, edgecore.yaml, and the refusals users see."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import jwt
import pytest
from kubernetes import client as k8s
from typer.testing import CliRunner, Result

from cloudcore import load_or_create_ca, load_or_create_token_key
from cloudsync import (
    CaHashMismatchError,
    CertificateAuthority,
    CertServer,
    TokenAuthority,
    join,
    node_name_of,
    split_token,
)
from cloudsync.pki import load_certificate
from edgecore import load_config
from edgetwin.cli import app
from edgetwin.testing import free_port
from edgetwin.testing.kubeapi import KubeApi

NODE = "edge-1"


@contextlib.asynccontextmanager
async def cert_server(ca: CertificateAuthority, tokens: TokenAuthority) -> AsyncIterator[CertServer]:
    cert_pem, key_pem = ca.issue_server_cert(["127.0.0.1"])
    server = CertServer(
        ca, tokens, host="127.0.0.1", port=free_port(), server_cert_pem=cert_pem, server_key_pem=key_pem
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create()


@pytest.fixture
def tokens(ca: CertificateAuthority) -> TokenAuthority:
    return TokenAuthority(secrets.token_bytes(32), ca.hash())


@pytest.fixture
async def server(ca: CertificateAuthority, tokens: TokenAuthority) -> AsyncIterator[CertServer]:
    async with cert_server(ca, tokens) as running:
        yield running


async def invoke(*args: str) -> Result:
    """Run the CLI in a thread: the command runs its own event loop, this test's loop serves meanwhile."""
    return await asyncio.to_thread(CliRunner().invoke, app, list(args))


def join_args(server: CertServer, token: str, workdir: Path, *extra: str) -> list[str]:
    return [
        "join",
        "--cloudcore-ipport",
        f"127.0.0.1:{free_port()}",
        "--token",
        token,
        "--edgenode-name",
        NODE,
        "--certport",
        str(server.port),
        "--kubeedge-dir",
        str(workdir / "kubeedge"),
        "--database",
        str(workdir / "edgecore.db"),
        *extra,
    ]


def check_credentials(ca_file: Path, cert_file: Path, key_file: Path, ca: CertificateAuthority) -> None:
    """The files hold the CA, a certificate it issued for the node, and a private key only root reads."""
    assert ca_file.read_bytes() == ca.cert_pem()
    cert = load_certificate(cert_file.read_bytes())
    cert.verify_directly_issued_by(ca.cert)
    assert node_name_of(cert) == NODE
    assert key_file.stat().st_mode & 0o777 == 0o600


async def test_join_pins_the_ca_and_gets_a_certificate(
    server: CertServer, ca: CertificateAuthority, tokens: TokenAuthority
) -> None:
    steps: list[str] = []
    credentials = await join("127.0.0.1", tokens.issue(), NODE, cert_port=server.port, progress=steps.append)
    assert credentials.ca_pem == ca.cert_pem()
    assert node_name_of(credentials.certificate) == NODE
    assert len(steps) == 2
    assert ca.hash() in steps[0]


async def test_token_for_another_ca_is_refused_before_anything_is_sent(server: CertServer) -> None:
    other_cluster = TokenAuthority(secrets.token_bytes(32), CertificateAuthority.create().hash())
    with pytest.raises(CaHashMismatchError) as caught:
        await join("127.0.0.1", other_cluster.issue(), NODE, cert_port=server.port)
    assert str(caught.value).startswith(
        f"the CA at 127.0.0.1:{server.port} is not the one the token names: "
        "token for another cluster or a man in the middle"
    )


async def test_join_command_writes_certificates_and_a_complete_edgecore_yaml(
    server: CertServer, ca: CertificateAuthority, tokens: TokenAuthority, tmp_path: Path
) -> None:
    args = join_args(server, tokens.issue(), tmp_path, "--with-edge-taint", "--labels", "zone=lab,rack=r1")
    result = await invoke(*args, "--install-service", "--systemd-dir", str(tmp_path / "systemd"))
    assert result.exit_code == 0, result.output
    for step in ("[1/3]", "[2/3]", "[3/3]", "systemctl daemon-reload && systemctl enable --now edgecore"):
        assert step in result.output

    kubeedge = tmp_path / "kubeedge"
    config = load_config(kubeedge / "config" / "edgecore.yaml")
    assert config.unknown_fields() == []
    hub = config.modules.edge_hub
    assert hub.enable
    assert hub.websocket.server == args[2]
    assert hub.http_server == f"https://127.0.0.1:{server.port}"
    assert hub.token == ""  # the certificate replaces it: no credential left in the file
    assert config.node_name == NODE
    assert config.modules.edged.node_labels == {"zone": "lab", "rack": "r1"}
    [taint] = config.modules.edged.tailored_kubelet_config.register_with_taints
    assert (taint.key, taint.value, taint.effect) == ("node-role.kubernetes.io/edge", "", "NoSchedule")
    assert config.database.path == tmp_path / "edgecore.db"

    assert Path(hub.tls_ca_file) == kubeedge / "ca" / "rootCA.crt"
    stream = config.modules.edge_stream  # one switch away from kubectl logs / exec
    assert stream.server == "127.0.0.1:10004"
    assert (stream.tls_tunnel_cert_file, stream.tls_tunnel_private_key_file) == (
        hub.tls_cert_file,
        hub.tls_private_key_file,
    )
    check_credentials(Path(hub.tls_ca_file), Path(hub.tls_cert_file), Path(hub.tls_private_key_file), ca)

    unit = (tmp_path / "systemd" / "edgecore.service").read_text()
    assert f"edgecore --config {kubeedge / 'config' / 'edgecore.yaml'}" in unit
    assert "WantedBy=multi-user.target" in unit


async def test_join_command_without_taint_or_service_prints_how_to_start(
    server: CertServer, tokens: TokenAuthority, tmp_path: Path
) -> None:
    result = await invoke(*join_args(server, tokens.issue(), tmp_path))
    assert result.exit_code == 0, result.output
    config_file = tmp_path / "kubeedge" / "config" / "edgecore.yaml"
    assert f"edgecore --config {config_file}" in result.output
    assert load_config(config_file).modules.edged.tailored_kubelet_config.register_with_taints == []


async def test_join_command_shows_the_servers_reason_for_an_expired_token(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    key = secrets.token_bytes(32)
    # Signed with the server's own key: only the expiry is wrong.
    expired = f"{ca.hash()}.{jwt.encode({'exp': 1}, key, algorithm='HS256')}"
    async with cert_server(ca, TokenAuthority(key, ca.hash())) as server:
        result = await invoke(*join_args(server, expired, tmp_path))
    assert result.exit_code == 1
    assert "answered 401" in result.stderr
    assert "token expired" in result.stderr
    assert not (tmp_path / "kubeedge" / "certs" / "server.key").exists()


async def test_join_command_refuses_a_token_of_another_cluster(server: CertServer, tmp_path: Path) -> None:
    other_cluster = TokenAuthority(secrets.token_bytes(32), CertificateAuthority.create().hash())
    result = await invoke(*join_args(server, other_cluster.issue(), tmp_path))
    assert result.exit_code == 1
    assert "token for another cluster or a man in the middle" in result.stderr


async def test_join_command_refuses_a_bad_node_name_before_any_request(tmp_path: Path) -> None:
    result = await invoke(
        "join",
        "--cloudcore-ipport",
        "127.0.0.1:10000",
        "--token",
        "x",
        "--edgenode-name",
        "Bad_Name",
        "--kubeedge-dir",
        str(tmp_path),
    )
    assert result.exit_code == 2
    assert "modules.edged.hostnameOverride" in result.stderr


@pytest.mark.kube
async def test_gettoken_then_join_end_to_end(
    kube_api: KubeApi, kube_client: k8s.ApiClient, kube_namespace: str, tmp_path: Path
) -> None:
    ca = await load_or_create_ca(kube_client, kube_namespace)
    key = await load_or_create_token_key(kube_client, kube_namespace)

    result = await invoke(
        "gettoken", "--kubeconfig", str(kube_api.kubeconfig), "-n", kube_namespace, "--ttl", "1h"
    )
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    ca_hash, token_jwt = split_token(token)
    assert ca_hash == ca.hash()
    TokenAuthority(key, ca.hash()).verify(token_jwt)

    async with cert_server(ca, TokenAuthority(key, ca.hash())) as server:
        joined = await invoke(*join_args(server, token, tmp_path))
    assert joined.exit_code == 0, joined.output


@pytest.mark.kube
async def test_gettoken_before_cloudcore_ever_ran(kube_api: KubeApi, kube_namespace: str) -> None:
    result = await invoke("gettoken", "--kubeconfig", str(kube_api.kubeconfig), "--namespace", kube_namespace)
    assert result.exit_code == 1
    assert f"start cloudcore first: secret {kube_namespace}/casecret not found" in result.stderr
    assert result.stdout == ""


async def test_gettoken_refuses_a_bad_ttl() -> None:
    result = await invoke("gettoken", "--ttl", "tomorrow")
    assert result.exit_code == 2
    assert "24h" in result.output
