"""The edge's side of ``kubectl logs`` / ``exec``: sessions of the stream tunnel served from the runtime.

:class:`ContainerStreams` is the :class:`~cloudsync.TunnelHandler` of edgecore's
:class:`~cloudsync.TunnelClient` (``modules.edgeStream``). It finds the container by its pod's namespace and
name and its own name among Edged's containers (the newest; ``previous``: the one before), then:

* logs: reads the container's CRI log file, honouring ``tailLines``, ``sinceSeconds``, ``limitBytes`` and
  ``timestamps``; with ``follow`` it keeps sending the lines appended until the container stops or the
  client goes away;
* exec: runs the command with CRI ``ExecSync`` and sends its stdout, stderr and exit status on the
  remote-command channels. ``ExecSync`` takes no input and no terminal, so ``kubectl exec -i`` / ``-t``
  are refused with a sentence saying so; the output arrives when the command ends (``exec_timeout``).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cloudsync import (
    Channel,
    ExecRequest,
    LogsRequest,
    SessionChannel,
    StreamRejectedError,
    exec_status,
)
from edgecore.edged import (
    POD_NAME_LABEL,
    POD_NAMESPACE_LABEL,
    ContainerInfo,
    ContainerRuntime,
    ContainerRuntimeError,
    ContainerState,
)
from edgecore.streamlogs import LogCursor, LogLine, render, tail_offset

__all__ = ["EXEC_TIMEOUT", "ContainerStreams"]

log = logging.getLogger(__name__)

EXEC_TIMEOUT: Final = 300.0
"""Seconds an exec may run before the runtime kills it."""
_CHUNK: Final = 32 * 1024  # bytes per tunnel frame, well under the websocket's message limit
_STATE_CHECK: Final = 1.0  # seconds between checks of a followed container's state while it is quiet


class ContainerStreams:
    """Serves the tunnel's logs and exec sessions from ``runtime`` (``None``: Edged is off on this node).

    ``poll_interval``: seconds between reads of a followed log file that has nothing new.
    """

    def __init__(
        self,
        runtime: ContainerRuntime | None,
        node_name: str,
        *,
        exec_timeout: float = EXEC_TIMEOUT,
        poll_interval: float = 0.2,
    ) -> None:
        self._runtime = runtime
        self._node = node_name
        self._exec_timeout = exec_timeout
        self._poll = poll_interval

    async def serve(self, request: LogsRequest | ExecRequest, channel: SessionChannel) -> None:
        """Serve one session; refusals (no such container, interactive exec) raise before accepting."""
        runtime = self._runtime
        if runtime is None:
            raise StreamRejectedError(500, f"node {self._node} runs no pods (modules.edged.enable is false)")
        if isinstance(request, LogsRequest):
            await self._logs(runtime, request, channel)
        else:
            await self._exec(runtime, request, channel)

    async def _container(
        self, runtime: ContainerRuntime, request: LogsRequest | ExecRequest, *, previous: bool = False
    ) -> ContainerInfo:
        labels = {POD_NAMESPACE_LABEL: request.namespace, POD_NAME_LABEL: request.pod}
        try:
            found = [
                info
                for info in await runtime.list_containers(labels=labels)
                if info.name == request.container
            ]
        except ContainerRuntimeError as exc:
            raise StreamRejectedError(500, f"the container runtime of node {self._node}: {exc}") from exc
        where = f'container "{request.container}" in pod "{request.pod}" of namespace {request.namespace}'
        if not found:
            raise StreamRejectedError(404, f"{where} is not running on node {self._node}")
        if previous:
            if len(found) < 2:
                raise StreamRejectedError(400, f"previous terminated {where} not found")
            return found[-2]
        return found[-1]

    # -- logs ---------------------------------------------------------------------------------------------

    async def _logs(self, runtime: ContainerRuntime, request: LogsRequest, channel: SessionChannel) -> None:
        container = await self._container(runtime, request, previous=request.previous)
        path = Path(container.log_path)
        try:
            start = (
                await asyncio.to_thread(tail_offset, path, request.tail_lines)
                if request.tail_lines is not None
                else 0
            )
        except OSError as exc:
            raise StreamRejectedError(
                404, f"the log of container {request.container} cannot be read: {exc.strerror}"
            ) from exc
        await channel.accept()
        since = (
            datetime.now(UTC) - timedelta(seconds=request.since_seconds)
            if request.since_seconds is not None
            else None
        )
        budget = request.limit_bytes
        cursor = LogCursor(path, start)
        quiet_since = asyncio.get_running_loop().time()
        while budget is None or budget > 0:
            lines = await asyncio.to_thread(cursor.read)
            data = b"".join(
                render(line, timestamps=request.timestamps) for line in lines if _after(line, since)
            )
            if budget is not None:
                data, budget = data[:budget], budget - len(data[:budget])
            for offset in range(0, len(data), _CHUNK):
                await channel.send(data[offset : offset + _CHUNK])
            if lines:
                quiet_since = asyncio.get_running_loop().time()
                continue
            if not request.follow:
                return
            now = asyncio.get_running_loop().time()
            if now - quiet_since >= _STATE_CHECK:
                quiet_since = now
                if not await self._running(runtime, container.id):
                    # Stopped: what it wrote last is in the file already; one more read takes it.
                    request = request.model_copy(update={"follow": False})
                    continue
            await asyncio.sleep(self._poll)

    async def _running(self, runtime: ContainerRuntime, container_id: str) -> bool:
        try:
            return (await runtime.container_status(container_id)).state is ContainerState.RUNNING
        except ContainerRuntimeError:
            return False

    # -- exec ---------------------------------------------------------------------------------------------

    async def _exec(self, runtime: ContainerRuntime, request: ExecRequest, channel: SessionChannel) -> None:
        if request.stdin or request.tty:
            raise StreamRejectedError(
                400,
                "interactive exec (kubectl exec -i / -t) is not supported by edgetwin: "
                "run the command without -i and -t",
            )
        container = await self._container(runtime, request)
        if container.state is not ContainerState.RUNNING:
            raise StreamRejectedError(
                400, f"container {request.container} is not running (state {container.state.value})"
            )
        await channel.accept()
        log.info(
            "exec in container",
            extra={"pod": f"{request.namespace}/{request.pod}", "container": request.container},
        )
        try:
            result = await runtime.exec_sync(container.id, request.command, timeout=self._exec_timeout)
        except ContainerRuntimeError as exc:
            await channel.send(bytes([Channel.ERROR]) + exec_status(None, str(exc)))
            return
        for wanted, stream, data in (
            (request.stdout, Channel.STDOUT, result.stdout),
            (request.stderr, Channel.STDERR, result.stderr),
        ):
            if wanted:
                for offset in range(0, len(data), _CHUNK):
                    await channel.send(bytes([stream]) + data[offset : offset + _CHUNK])
        await channel.send(bytes([Channel.ERROR]) + exec_status(result.exit_code))


def _after(line: LogLine, since: datetime | None) -> bool:
    if since is None:
        return True
    moment = line.at()
    return moment is None or moment >= since
