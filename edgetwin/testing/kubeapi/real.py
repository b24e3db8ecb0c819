"""A real kube-apiserver (v1.28) on Debian's etcd, both on free loopback ports, for tests and the demo.

Without a controller-manager or scheduler: namespaces never finish deleting, Pods need ``spec.nodeName``, and
ServiceAccount admission is off because nothing creates the ``default`` service accounts.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from edgetwin.testing.kubeapi.certs import ApiServerCertificates, write_certificates
from edgetwin.testing.kubeapi.errors import BackendUnavailableError, KubeApiStartError
from edgetwin.testing.kubeapi.handle import KubeApi, write_kubeconfig
from edgetwin.testing.kubeapi.processes import ManagedProcess
from edgetwin.testing.ports import free_port
from edgetwin.testing.waiting import WaitTimeout, wait_for

APISERVER_ENV = "KUBE_APISERVER"
ETCD_ENV = "ETCD"
_REPO_ROOT = Path(__file__).resolve().parents[3]
_STOP_GRACE = 15.0


def find_apiserver() -> Path | None:
    """The kube-apiserver binary: ``$KUBE_APISERVER``, else ``<repository>/../shared/bin/kube-apiserver``."""
    configured = os.environ.get(APISERVER_ENV)
    candidate = Path(configured) if configured else _REPO_ROOT.parent / "shared" / "bin" / "kube-apiserver"
    return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None


def find_etcd() -> Path | None:
    """The etcd binary: ``$ETCD``, else ``etcd`` on the PATH (Debian's ``etcd-server`` package)."""
    found = os.environ.get(ETCD_ENV) or shutil.which("etcd")
    return Path(found) if found and os.access(found, os.X_OK) else None


def real_backend_available() -> bool:
    """Whether both kube-apiserver and etcd binaries are present."""
    return find_apiserver() is not None and find_etcd() is not None


async def _wait_until_ready(
    process: ManagedProcess, probe: Callable[[], Awaitable[bool]], timeout: float, what: str
) -> None:
    async def ready_or_dead() -> bool:
        return process.exited or await probe()

    try:
        # Annotated because mypy cannot infer wait_for's type variable from an async condition alone.
        ready_or_exited: bool = await wait_for(ready_or_dead, timeout=timeout, interval=0.1, what=what)
    except WaitTimeout as exc:
        raise KubeApiStartError(process.name, f"not ready after {timeout:.0f}s", process.log_tail()) from exc
    if ready_or_exited and process.exited:
        reason = f"exited with status {process.returncode}"
        raise KubeApiStartError(process.name, reason, process.log_tail())


async def _probe(
    session: aiohttp.ClientSession, url: str, tls: ssl.SSLContext | None = None, token: str | None = None
) -> bool:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = aiohttp.ClientTimeout(total=2)
    async with session.get(url, ssl=tls or True, headers=headers, timeout=timeout) as response:
        return response.status == 200


def _prepare(workdir: Path, token_file: Path, token: str) -> ApiServerCertificates:
    """Write the key material and the static token file (an admin in system:masters)."""
    certs = write_certificates(workdir / "pki")
    token_file.write_text(f'{token},admin,admin-uid,"system:masters"\n')
    token_file.chmod(0o600)
    return certs


def _etcd_argv(etcd: Path, data_dir: Path, client_port: int, peer_port: int) -> list[str]:
    client = f"http://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    return [
        str(etcd),
        "--name=local",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=local={peer}",
    ]


@asynccontextmanager
async def run_real_api(workdir: Path, startup_timeout: float = 60.0) -> AsyncIterator[KubeApi]:
    """Start etcd and kube-apiserver under ``workdir``, yield the API's handle, then stop both.

    Raises :class:`BackendUnavailableError` when a binary is missing and :class:`KubeApiStartError` (with the
    tail of the component's log) when a component does not come up; whatever was started is stopped.
    """
    apiserver, etcd = find_apiserver(), find_etcd()
    if apiserver is None or etcd is None:
        missing = "kube-apiserver" if apiserver is None else "etcd"
        raise BackendUnavailableError("real", f"no {missing} binary found")
    token = secrets.token_urlsafe(24)
    token_file = workdir / "tokens.csv"
    certs = await asyncio.to_thread(_prepare, workdir, token_file, token)

    etcd_port = free_port()
    etcd_process = ManagedProcess(
        "etcd", _etcd_argv(etcd, workdir / "etcd-data", etcd_port, free_port()), workdir / "etcd.log"
    )
    api_port = free_port()
    api_process = ManagedProcess(
        "kube-apiserver",
        [
            str(apiserver),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={api_port}",
            f"--tls-cert-file={certs.cert_file}",
            f"--tls-private-key-file={certs.key_file}",
            f"--client-ca-file={certs.ca_file}",
            f"--token-auth-file={token_file}",
            "--authorization-mode=RBAC",
            f"--service-account-key-file={certs.service_account_public_key}",
            f"--service-account-signing-key-file={certs.service_account_key}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.96.0.0/16",
            # With the advertise address on loopback, the endpoint reconciler would fight over it.
            "--endpoint-reconciler-type=none",
            # No controller-manager creates the "default" service accounts, so Pods would be rejected.
            "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true",
            # kubectl logs / exec reach a node at its InternalIP (edgetwin's stream port on loopback); the
            # default tries the Hostname first, a DNS lookup of the node name that must not leave the machine.
            "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
        ],
        workdir / "kube-apiserver.log",
    )
    url = f"https://127.0.0.1:{api_port}"
    tls = ssl.create_default_context(cafile=str(certs.ca_file))
    try:
        async with aiohttp.ClientSession() as session:
            await etcd_process.start()
            await _wait_until_ready(
                etcd_process,
                lambda: _probe(session, f"http://127.0.0.1:{etcd_port}/health"),
                timeout=30.0,
                what="etcd /health",
            )
            await api_process.start()
            await _wait_until_ready(
                api_process,
                lambda: _probe(session, f"{url}/readyz", tls, token),
                timeout=startup_timeout,
                what="kube-apiserver /readyz",
            )
        kubeconfig = await asyncio.to_thread(
            write_kubeconfig, workdir / "kubeconfig", url, token, certs.ca_file
        )
        yield KubeApi("real", url, kubeconfig, token, certs.ca_file, workdir)
    finally:
        # The apiserver goes first: stopping etcd under it only makes it log connection errors.
        try:
            await api_process.stop(_STOP_GRACE)
        finally:
            await etcd_process.stop(_STOP_GRACE)
