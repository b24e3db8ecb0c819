"""A Kubernetes API for tests and the demo: a real kube-apiserver + etcd, or a kmock-based emulator.

``async with start_kube_api(backend="auto", workdir=path) as api:`` yields a :class:`KubeApi` with the URL,
a kubeconfig for kubectl and the Python client, the bearer token and the CA file (``None`` for the emulator).
"""

from edgetwin.testing.kubeapi.errors import (
    BackendUnavailableError,
    KubeApiError,
    KubeApiStartError,
    KubectlError,
)
from edgetwin.testing.kubeapi.handle import Backend, KubeApi, write_kubeconfig
from edgetwin.testing.kubeapi.launch import (
    BackendChoice,
    available_backends,
    emulator_available,
    resolve_backend,
    start_kube_api,
)
from edgetwin.testing.kubeapi.real import find_apiserver, find_etcd, real_backend_available

__all__ = [
    "Backend",
    "BackendChoice",
    "BackendUnavailableError",
    "KubeApi",
    "KubeApiError",
    "KubeApiStartError",
    "KubectlError",
    "available_backends",
    "emulator_available",
    "find_apiserver",
    "find_etcd",
    "real_backend_available",
    "resolve_backend",
    "start_kube_api",
    "write_kubeconfig",
]
