"""The handle on a running Kubernetes API, whichever backend serves it, and its kubeconfig."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from edgetwin.testing.kubeapi.errors import KubectlError

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

Backend = Literal["real", "emulator"]

_CONTEXT = "edgetwin"


@dataclass(frozen=True)
class KubeApi:
    """A running Kubernetes API: where it listens and how to authenticate to it.

    ``ca_file`` is ``None`` for the plain-HTTP emulator. ``kubeconfig`` works with ``kubectl --kubeconfig``
    and with ``kubernetes.config.load_kube_config``.
    """

    backend: Backend
    url: str
    kubeconfig: Path
    token: str
    ca_file: Path | None
    workdir: Path

    def api_client(self) -> ApiClient:
        """Return a new blocking ``kubernetes.client.ApiClient`` for this API; the caller closes it."""
        from kubernetes import config

        # The kubernetes package ships no type hints.
        client: ApiClient = config.new_client_from_config(config_file=str(self.kubeconfig))  # type: ignore[no-untyped-call]
        return client

    def kubectl(self, *args: str) -> list[str]:
        """Return the argv of ``kubectl <args>`` against this API, with a discovery cache of its own."""
        return [
            "kubectl",
            f"--kubeconfig={self.kubeconfig}",
            f"--cache-dir={self.workdir / 'kubectl-cache'}",
            *args,
        ]

    async def run_kubectl(self, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> str:
        """Run ``kubectl <args>`` against this API and return its stdout; :class:`KubectlError` (an
        ``AssertionError``, with kubectl's stderr) on a non-zero exit."""
        process = await asyncio.create_subprocess_exec(
            *self.kubectl(*args),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **(env or {})},
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), timeout)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        if process.returncode != 0:
            raise KubectlError(" ".join(args), err.decode())
        return out.decode()


def write_kubeconfig(path: Path, url: str, token: str, ca_file: Path | None) -> Path:
    """Write a kubeconfig with one cluster, one bearer-token user and one current context; return ``path``."""
    cluster: dict[str, Any] = {"server": url}
    if ca_file is not None:
        cluster["certificate-authority"] = str(ca_file)
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": _CONTEXT, "cluster": cluster}],
        "users": [{"name": _CONTEXT, "user": {"token": token}}],
        "contexts": [{"name": _CONTEXT, "context": {"cluster": _CONTEXT, "user": _CONTEXT}}],
        "current-context": _CONTEXT,
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    path.chmod(0o600)
    return path
