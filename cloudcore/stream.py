"""CloudStream: ``kubectl logs`` and ``kubectl exec`` for edge pods, as KubeEdge's cloudcore stream module.

The apiserver reaches a node's kubelet at ``status.daemonEndpoints.kubeletEndpoint.Port`` of the node's
address; for edge nodes cloudcore writes its stream port there (see :mod:`cloudcore.nodes`), so the
apiserver's kubelet calls land here, on an HTTPS server with kubelet's paths:

* ``GET /containerLogs/{namespace}/{pod}/{container}?follow=&previous=&timestamps=&tailLines=&limitBytes=
  &sinceSeconds=`` answers the log text (streamed while ``follow``);
* ``/exec/{namespace}/{pod}/{container}?command=...&stdin=&stdout=&stderr=&tty=`` upgrades to a websocket
  speaking ``v5.channel.k8s.io`` or ``v4.channel.k8s.io`` (what ``kubectl`` >= 1.30 asks for first; SPDY,
  its fallback, is refused with a sentence saying so), and the exit code travels back as kubelet sends it.

Several edge nodes share an address on one machine, so a request is routed by its pod: the pod's
``spec.nodeName`` (read from the API) names the node, and the session runs on that node's tunnel
(:class:`~cloudsync.TunnelServer`, mutual TLS with node certificates: a node serves only its own pods).
Callers of the stream port must present a client certificate of ``tlsStreamCAFile`` (the apiserver's
``--kubelet-client-certificate``) unless that setting is empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Final

import kubernetes.client as k8s
from aiohttp import WSMsgType, web
from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError

from cloudcore.config import CloudStreamConfig
from cloudcore.errors import CloudCoreConfigError, CloudCoreError, KubeNotFoundError, StreamServeError
from cloudcore.kube import request as kube_request
from cloudsync import (
    Channel,
    ExecRequest,
    LogsRequest,
    StreamRejectedError,
    TunnelServer,
    TunnelSession,
    TunnelUnavailableError,
    exec_status,
    server_ssl_context,
)
from serving import join_host_port, start_site

__all__ = ["EXEC_PROTOCOLS", "CloudStream"]

log = logging.getLogger(__name__)

EXEC_PROTOCOLS: Final = ("v5.channel.k8s.io", "v4.channel.k8s.io")
"""The remote-command websocket protocols served, preferred first."""

_LOG_OPTIONS: Final = ("follow", "previous", "timestamps", "tailLines", "limitBytes", "sinceSeconds")
# kubelet's exec flags as the apiserver sends them (input, output, error), or by their stream names.
_EXEC_FLAGS: Final = {
    "stdin": ("input", "stdin"),
    "stdout": ("output", "stdout"),
    "stderr": ("error", "stderr"),
    "tty": ("tty",),
}
_NOT_WEBSOCKET: Final = (
    "edgetwin's stream server runs exec over websockets ({}), not SPDY: use kubectl 1.30 or newer"
).format(" / ".join(EXEC_PROTOCOLS))


class _Refused(CloudCoreError):
    """An HTTP answer other than success, with kubelet's plain-text body."""

    def __init__(self, status: int, reason: str, outcome: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.outcome = outcome


class CloudStream:
    """The stream server (``streamPort``) and the tunnel server (``tunnelPort``); a supervised module.

    ``host`` is the address both listen on; ``ca_pem`` is the cluster CA (node certificates of the tunnel);
    ``cert_pem`` / ``key_pem`` cloudcore's serving certificate. Ports 0 pick free ports
    (:attr:`stream_port`, :attr:`tunnel_port`).
    """

    name = "cloudstream"

    def __init__(
        self,
        api: k8s.ApiClient,
        config: CloudStreamConfig,
        *,
        host: str,
        ca_pem: bytes,
        cert_pem: bytes,
        key_pem: bytes,
        registry: CollectorRegistry,
        accept_timeout: float = 10.0,
    ) -> None:
        self._api = api
        self._config = config
        self._host = host
        self._ca_pem = ca_pem
        self._cert_pem = cert_pem
        self._key_pem = key_pem
        self.tunnel = TunnelServer(
            host,
            config.tunnel_port,
            server_ssl_context(ca_pem, cert_pem, key_pem, require_client_cert=True),
            registry=registry,
            accept_timeout=accept_timeout,
        )
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._requests = Counter(
            "edgetwin_stream_requests",
            "kubectl logs / exec requests to the stream port, by kind and outcome",
            ["kind", "outcome"],
            registry=registry,
        )

    @property
    def stream_port(self) -> int | None:
        """The stream port bound (the kubelet port of edge Nodes), ``None`` while not serving."""
        return self._port

    @property
    def tunnel_port(self) -> int:
        """The tunnel port bound."""
        return self.tunnel.port

    async def start(self) -> None:
        """Open the tunnel port, then the stream port.

        Raises :class:`~cloudcore.errors.CloudCoreConfigError` when ``tlsStreamCAFile`` cannot be read and
        :class:`~cloudsync.TunnelServeError` / :class:`~cloudcore.StreamServeError` when a port cannot be
        bound.
        """
        client_ca = await asyncio.to_thread(self._client_ca)
        verify = client_ca is not None
        context = server_ssl_context(
            client_ca or self._ca_pem, self._cert_pem, self._key_pem, require_client_cert=verify
        )
        if not verify:
            log.warning(
                "modules.cloudStream.tlsStreamCAFile is empty: the stream port asks for no certificate"
            )
        await self.tunnel.start()
        app = web.Application()
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self._logs)
        app.router.add_route("*", "/exec/{namespace}/{pod}/{container}", self._exec)
        # handler_cancellation: a follow whose client went away ends at once, and so does its session.
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        address = join_host_port(self._host, self._config.stream_port)
        try:
            self._port = await start_site(
                runner,
                self._host,
                self._config.stream_port,
                ssl_context=context,
                error=lambda reason: StreamServeError(address, reason),
            )
        except StreamServeError:
            await self.tunnel.stop()
            raise
        self._runner = runner
        log.info(
            "stream server listening", extra={"stream_port": self._port, "tunnel_port": self.tunnel_port}
        )

    async def wait(self) -> None:
        """Return when the tunnel server has closed."""
        await self.tunnel.wait()

    async def stop(self) -> None:
        """Stop both servers (their sessions end); idempotent."""
        runner, self._runner = self._runner, None
        self._port = None
        if runner is not None:
            await runner.cleanup()
        await self.tunnel.stop()

    def _client_ca(self) -> bytes | None:
        path = self._config.tls_stream_ca_file
        if not path:
            return None
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            reason = f'{path!r} cannot be read: {exc.strerror or exc} ("" requires no certificate)'
            field = "modules.cloudStream.tlsStreamCAFile"
            raise CloudCoreConfigError("cloudcore.yaml", field, [f"{field}: {reason}"]) from exc

    # -- kubelet's API ------------------------------------------------------------------------------------

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        options = {name: request.query[name] for name in _LOG_OPTIONS if name in request.query}
        try:
            logs = LogsRequest.model_validate({**_target(request), **options})
        except ValidationError as exc:
            return self._refuse("logs", _Refused(400, _first_error(exc), "invalid"))
        try:
            session = await self._open(logs)
        except _Refused as refused:
            return self._refuse("logs", refused)
        self._requests.labels(kind="logs", outcome="served").inc()
        response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        try:
            await response.prepare(request)
            while (data := await session.receive()) is not None:
                await response.write(data)
            await response.write_eof()
        finally:
            await session.close()
        return response

    async def _exec(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        # "1" when set, absent otherwise (an absent output means no stdout).
        flags = {
            flag: next((query[name] for name in names if name in query), "0")
            for flag, names in _EXEC_FLAGS.items()
        }
        try:
            exec_request = ExecRequest.model_validate(
                {**_target(request), **flags, "command": query.getall("command", [])}
            )
        except ValidationError as exc:
            return self._refuse("exec", _Refused(400, _first_error(exc), "invalid"))
        websocket = web.WebSocketResponse(protocols=EXEC_PROTOCOLS)
        ready = websocket.can_prepare(request)
        if not ready.ok or ready.protocol is None:
            # As a Status: kubectl's SPDY client prints the message of one, and nothing of a plain text.
            self._refuse("exec", _Refused(400, _NOT_WEBSOCKET, "invalid"))
            status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
            return web.json_response(
                {**status, "message": _NOT_WEBSOCKET, "reason": "BadRequest", "code": 400}, status=400
            )
        # Upgraded first, so that a refusal reaches kubectl as the exec's own error, which it prints.
        await websocket.prepare(request)
        try:
            session = await self._open(exec_request)
        except _Refused as refused:
            self._requests.labels(kind="exec", outcome=refused.outcome).inc()
            await websocket.send_bytes(bytes([Channel.ERROR]) + exec_status(None, refused.reason))
            await websocket.close()
            return websocket
        self._requests.labels(kind="exec", outcome="served").inc()
        await _relay(websocket, session)
        return websocket

    async def _open(self, stream_request: LogsRequest | ExecRequest) -> TunnelSession:
        """The session on the tunnel of the pod's node; :class:`_Refused` says why there is none."""
        node = await self._node_of(stream_request.namespace, stream_request.pod)
        try:
            return await self.tunnel.open(node, stream_request)
        except StreamRejectedError as exc:
            raise _Refused(exc.code, exc.reason, "rejected") from exc
        except TunnelUnavailableError as exc:
            # 502, not 503: the apiserver passes the reason of a 5xx on, except a 503's.
            raise _Refused(502, str(exc), "unavailable") from exc

    async def _node_of(self, namespace: str, pod: str) -> str:
        try:
            found = await kube_request(
                self._api, "GET", f"/api/v1/namespaces/{namespace}/pods/{pod}", operation=f"read pod {pod}"
            )
        except KubeNotFoundError as exc:
            raise _Refused(404, f'pods "{pod}" not found in namespace {namespace}', "rejected") from exc
        except CloudCoreError as exc:
            raise _Refused(502, str(exc), "unavailable") from exc
        node = str((found.get("spec") or {}).get("nodeName") or "")
        if not node:
            raise _Refused(400, f"pod {namespace}/{pod} is not bound to a node", "rejected")
        return node

    def _refuse(self, kind: str, refused: _Refused) -> web.Response:
        self._requests.labels(kind=kind, outcome=refused.outcome).inc()
        log.info(
            "stream request refused",
            extra={"kind": kind, "status": refused.status, "reason": refused.reason},
        )
        return web.Response(status=refused.status, text=refused.reason + "\n")


def _target(request: web.Request) -> dict[str, str]:
    info = request.match_info
    return {"namespace": info["namespace"], "pod": info["pod"], "container": info["container"]}


def _first_error(exc: ValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    return f"{'.'.join(str(part) for part in first['loc'])}: {first['msg']}"


async def _relay(websocket: web.WebSocketResponse, session: TunnelSession) -> None:
    """Pipe the client's messages (stdin, resize) to the edge and the edge's back, until either ends."""

    async def upstream() -> None:
        async for message in websocket:
            if message.type is WSMsgType.BINARY:
                await session.send(message.data)
        await session.close()  # the client went away: the edge stops the command's stream

    forward = asyncio.create_task(upstream(), name=f"stream-exec-{session.node}-{session.id}")
    try:
        while (data := await session.receive()) is not None:
            await websocket.send_bytes(data)
    finally:
        forward.cancel()
        with contextlib.suppress(asyncio.CancelledError, TunnelUnavailableError):
            await forward
        await session.close()
        await websocket.close()
