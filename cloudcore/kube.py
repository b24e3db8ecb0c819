"""Small helpers for the blocking ``kubernetes`` client: building it, calling it off the loop, its errors.

The client blocks, so every call here runs in a worker thread (:func:`asyncio.to_thread`) and its
exceptions are translated where they enter: callers see :class:`~cloudcore.errors.KubeNotFoundError`,
:class:`~cloudcore.errors.KubeConflictError`, :class:`~cloudcore.errors.KubeApiError` (the API refused) or
:class:`~cloudcore.errors.KubeUnavailableError` (not reachable, overloaded, timed out: retrying may help),
never ``ApiException`` or ``urllib3`` errors.

:func:`request` sends a JSON body as it is and returns the answer as a dict. The generated typed methods
convert bodies to their models first, which rewrites timestamps (``renewTime`` of a Lease loses the
microseconds a real apiserver requires) and costs a model per answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Final

import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from cloudcore.errors import (
    CloudCoreError,
    CrdNotServedError,
    KubeApiError,
    KubeConfigError,
    KubeConflictError,
    KubeNotFoundError,
    KubeUnavailableError,
)

__all__ = [
    "JSON",
    "MERGE_PATCH",
    "STRATEGIC_MERGE_PATCH",
    "bundled_crd",
    "ensure_crd",
    "ensure_namespace",
    "kube_micro_time",
    "kube_time",
    "list_all",
    "load_api_client",
    "request",
    "translate_error",
]

JSON: Final = "application/json"
MERGE_PATCH: Final = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH: Final = "application/strategic-merge-patch+json"

_CRDS_PATH: Final = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
# Answers that say "not now" rather than "no": too many requests, or the apiserver (or etcd) is unwell.
_TEMPORARY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
_LIST_PAGE: Final = 500


def load_api_client(kube_config: str | Path = "", *, master: str = "", pool_size: int = 0) -> k8s.ApiClient:
    """A blocking ``ApiClient`` built the way KubeEdge's cloudcore builds one (``kubeAPIConfig``).

    The settings come from ``kube_config`` when given, else ``$KUBECONFIG``, else the in-cluster service
    account, else ``~/.kube/config``; ``master`` overrides the server URL (and alone is enough for an
    insecure local apiserver). ``pool_size`` (0: the client's default) bounds the HTTP connections, which
    is the closest the Python client comes to KubeEdge's ``burst``. Reads files: call it at startup, or
    in a thread. Raises :class:`~cloudcore.errors.KubeConfigError` saying which source failed.
    """
    configuration = k8s.Configuration()
    path = str(kube_config) or os.environ.get("KUBECONFIG", "")
    # The client's config loaders carry no annotations (hence the ignores).
    try:
        if path:
            k8s_config.load_kube_config(config_file=path, client_configuration=configuration)  # type: ignore[no-untyped-call]
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        elif Path(k8s_config.KUBE_CONFIG_DEFAULT_LOCATION).expanduser().exists():
            k8s_config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        elif not master:
            raise KubeConfigError(
                "no kubeconfig: set kubeAPIConfig.kubeConfig or $KUBECONFIG, or run cloudcore in a cluster"
            )
    except (k8s_config.ConfigException, OSError, ValueError, yaml.YAMLError) as exc:
        source = path or "the in-cluster service account or ~/.kube/config"
        raise KubeConfigError(f"{source}: {exc}") from exc
    if master:
        configuration.host = master.rstrip("/")
    if pool_size:
        configuration.connection_pool_maxsize = pool_size
    return k8s.ApiClient(configuration)


def translate_error(exc: BaseException, operation: str) -> CloudCoreError:
    """The cloudcore error for an exception the client raised during ``operation`` (``raise ... from``)."""
    if isinstance(exc, k8s.ApiException):
        return _answer_error(operation, int(exc.status or 0), str(exc.reason or ""), exc.body)
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        return KubeUnavailableError(operation, str(exc) or type(exc).__name__)
    return KubeUnavailableError(operation, f"{type(exc).__name__}: {exc}")


def _answer_error(operation: str, status: int, reason: str, body: str | bytes | None) -> CloudCoreError:
    message = ""
    try:
        answer = json.loads(body or b"{}")
    except ValueError:
        answer = {}
    if isinstance(answer, dict):
        message = str(answer.get("message", ""))
        reason = str(answer.get("reason", "") or reason)
    if status == 0 or status in _TEMPORARY_STATUSES:  # 0: the client failed before any answer (TLS)
        return KubeUnavailableError(operation, f"{status} {reason}: {message}")
    kind: type[KubeApiError] = KubeApiError
    if status == 404:
        kind = KubeNotFoundError
    elif status == 409:
        kind = KubeConflictError
    return kind(operation, status, reason, message)


async def request(
    api: k8s.ApiClient,
    method: str,
    path: str,
    *,
    body: object = None,
    query: Sequence[tuple[str, str | int]] = (),
    content_type: str = JSON,
    operation: str = "",
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Send one request (``path`` such as ``/api/v1/nodes/n1/status``) in a thread; the JSON answer.

    ``body`` is sent as JSON unchanged, with ``content_type`` (:data:`MERGE_PATCH` for a merge patch).
    ``operation`` names the call in errors (default ``"<method> <path>"``).
    """
    what = operation or f"{method} {path}"
    try:
        return await asyncio.to_thread(
            _send, api, method, path, body, list(query), content_type, timeout, what
        )
    except (k8s.ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise translate_error(exc, what) from exc


def _send(
    api: k8s.ApiClient,
    method: str,
    path: str,
    body: object,
    query: list[tuple[str, str | int]],
    content_type: str,
    timeout: float,
    operation: str,
) -> dict[str, Any]:
    headers = {"Accept": JSON}
    if body is not None:
        headers["Content-Type"] = content_type
    prepared = api.param_serialize(
        method=method,
        resource_path=path,
        query_params=query,
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api.call_api(*prepared, _request_timeout=timeout)
    data: bytes = response.read()  # type: ignore[no-untyped-call]  # the REST response is not annotated
    if not 200 <= response.status < 300:
        raise _answer_error(operation, response.status, str(response.reason or ""), data)
    answer = json.loads(data) if data else {}
    return answer if isinstance(answer, dict) else {"items": answer}


async def list_all(
    api: k8s.ApiClient, path: str, *, query: Sequence[tuple[str, str | int]] = (), operation: str = ""
) -> list[dict[str, Any]]:
    """Every item of a list ``path``, read in pages (``limit`` / ``continue``) so big lists stay cheap."""
    items: list[dict[str, Any]] = []
    token = ""
    while True:
        page_query = [*query, ("limit", _LIST_PAGE)]
        if token:
            page_query.append(("continue", token))
        page = await request(api, "GET", path, query=page_query, operation=operation or f"list {path}")
        items += page.get("items") or []
        token = str((page.get("metadata") or {}).get("continue") or "")
        if not token:
            return items


async def ensure_namespace(api: k8s.ApiClient, name: str) -> None:
    """Create the namespace ``name`` unless it exists (safe when several processes race)."""
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    with contextlib.suppress(KubeConflictError):
        await request(api, "POST", "/api/v1/namespaces", body=body, operation=f"create namespace {name}")


def bundled_crd(filename: str) -> dict[str, Any]:
    """A CustomResourceDefinition shipped in ``cloudcore/crds`` (e.g. ``objectsync_v1alpha1.yaml``)."""
    text = resources.files("cloudcore").joinpath("crds", filename).read_text(encoding="utf-8")
    crd: dict[str, Any] = yaml.safe_load(text)
    return crd


async def ensure_crd(
    api: k8s.ApiClient, crd: Mapping[str, Any], *, timeout: float = 30.0, interval: float = 0.1
) -> None:
    """Install ``crd`` (create, or replace what is there) and wait until it is Established and served.

    Served means listed in discovery, which is what clients read to find the resource (a real
    apiserver publishes it a moment after Established). Raises :class:`~cloudcore.errors.CrdNotServedError`
    after ``timeout`` seconds.
    """
    name = crd["metadata"]["name"]
    try:
        await request(api, "POST", _CRDS_PATH, body=crd, operation=f"install CRD {name}")
    except KubeConflictError:
        current = await request(api, "GET", f"{_CRDS_PATH}/{name}", operation=f"read CRD {name}")
        metadata = {**crd["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]}
        # A conflict means another cloudcore replaced it meanwhile, with the same definition.
        with contextlib.suppress(KubeConflictError):
            await request(
                api,
                "PUT",
                f"{_CRDS_PATH}/{name}",
                body={**crd, "metadata": metadata},
                operation=f"update CRD {name}",
            )
    deadline = time.monotonic() + timeout
    while not await _served(api, crd):
        if time.monotonic() >= deadline:
            raise CrdNotServedError(name, timeout)
        await asyncio.sleep(interval)


async def _served(api: k8s.ApiClient, crd: Mapping[str, Any]) -> bool:
    name = crd["metadata"]["name"]
    current = await request(api, "GET", f"{_CRDS_PATH}/{name}", operation=f"read CRD {name}")
    conditions = (current.get("status") or {}).get("conditions") or []
    if not any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
        return False
    group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
    for version in crd["spec"]["versions"]:
        try:
            discovery = await request(api, "GET", f"/apis/{group}/{version['name']}", operation="discovery")
        except KubeNotFoundError:
            return False
        if plural not in [resource.get("name") for resource in discovery.get("resources") or []]:
            return False
    return True


def kube_time(timestamp: float) -> str:
    """A Kubernetes ``Time`` (RFC 3339, whole seconds, UTC): conditions' heartbeat and transition times."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def kube_micro_time(timestamp: float) -> str:
    """A Kubernetes ``MicroTime`` (six fraction digits, UTC), as a Lease's ``renewTime`` must be."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
