"""The stream tunnel's wire format: ``kubectl logs`` / ``exec`` sessions on one websocket per node.

KubeEdge's edge opens a tunnel to cloudcore (``edgestream``, port 10004, mutual TLS, the node certificate);
cloudcore's stream server (10003) turns each kubelet-style request of the apiserver into a session on the
tunnel of the node the pod is bound to. edgetwin's tunnel carries binary websocket messages, one
:class:`Frame` each: a 4-byte session id, a 1-byte :class:`FrameType`, then the payload.

A session: the cloud sends ``LOGS`` or ``EXEC`` with the request as JSON (:class:`LogsRequest`,
:class:`ExecRequest`); the edge answers ``ACCEPTED`` or ``REJECTED`` (a :class:`Rejection`: HTTP code and
reason), then ``DATA`` frames, then ``CLOSE``. Either side may send ``CLOSE`` to end it (the cloud does when
its client went away). Exec ``DATA`` payloads are the Kubernetes remote-command channels as they travel on
a ``v4/v5.channel.k8s.io`` websocket: a channel byte (:class:`Channel`) then the bytes, so the cloud relays
them to ``kubectl`` unchanged; the last message on :attr:`Channel.ERROR` is a ``metav1.Status`` (see
:func:`exec_status`). Logs ``DATA`` payloads are the log text.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cloudsync.errors import TunnelFrameError

__all__ = [
    "TUNNEL_PATH",
    "Channel",
    "ExecRequest",
    "Frame",
    "FrameType",
    "LogsRequest",
    "Rejection",
    "decode_frame",
    "encode_frame",
    "exec_status",
    "read_request",
]

TUNNEL_PATH: Final = "/v1/kubeedge/connect"
"""The path edges connect to on the tunnel port (KubeEdge's)."""

_HEADER = struct.Struct(">IB")


class FrameType(IntEnum):
    """What a frame says about its session."""

    LOGS = 1
    """cloud → edge: open a logs session (payload: :class:`LogsRequest` JSON)."""
    EXEC = 2
    """cloud → edge: open an exec session (payload: :class:`ExecRequest` JSON)."""
    ACCEPTED = 3
    """edge → cloud: the session runs; ``DATA`` follows."""
    REJECTED = 4
    """edge → cloud: the session cannot run (payload: :class:`Rejection` JSON); it is over."""
    DATA = 5
    """both ways: the session's bytes."""
    CLOSE = 6
    """both ways: the sender is done with the session."""


class Channel(IntEnum):
    """The remote-command channels of ``v4/v5.channel.k8s.io`` (the first byte of an exec ``DATA``)."""

    STDIN = 0
    STDOUT = 1
    STDERR = 2
    ERROR = 3
    RESIZE = 4
    CLOSE = 255
    """v5 only: the client closed the stream named by the next byte."""


@dataclass(frozen=True)
class Frame:
    """One tunnel message: ``session`` (chosen by the cloud, unique per tunnel), ``type`` and ``payload``."""

    session: int
    type: FrameType
    payload: bytes = b""


def encode_frame(frame: Frame) -> bytes:
    """The frame as one binary websocket message."""
    return _HEADER.pack(frame.session, frame.type) + frame.payload


def decode_frame(data: bytes | str) -> Frame:
    """Read one websocket message; raises :class:`TunnelFrameError` when it is not a frame."""
    if isinstance(data, str):
        raise TunnelFrameError("a text message (frames are binary)")
    if len(data) < _HEADER.size:
        raise TunnelFrameError(f"{len(data)} bytes, shorter than the {_HEADER.size}-byte header")
    session, kind = _HEADER.unpack_from(data)
    try:
        frame_type = FrameType(kind)
    except ValueError as exc:
        raise TunnelFrameError(f"unknown frame type {kind}") from exc
    return Frame(session, frame_type, bytes(data[_HEADER.size :]))


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class LogsRequest(_Wire):
    """kubelet's ``/containerLogs/{namespace}/{pod}/{container}`` with its query (``kubectl logs``)."""

    namespace: str = Field(min_length=1)
    pod: str = Field(min_length=1)
    container: str = Field(min_length=1)
    follow: bool = False
    previous: bool = False
    timestamps: bool = False
    tail_lines: int | None = Field(None, ge=0, alias="tailLines")
    limit_bytes: int | None = Field(None, gt=0, alias="limitBytes")
    since_seconds: int | None = Field(None, gt=0, alias="sinceSeconds")


class ExecRequest(_Wire):
    """kubelet's ``/exec/{namespace}/{pod}/{container}`` with its query (``kubectl exec``)."""

    namespace: str = Field(min_length=1)
    pod: str = Field(min_length=1)
    container: str = Field(min_length=1)
    command: tuple[str, ...] = Field(min_length=1)
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True
    tty: bool = False


class Rejection(_Wire):
    """Why the edge refused a session: the HTTP ``code`` kubelet would answer, and ``reason``."""

    code: int = Field(ge=400, le=599)
    reason: str


def read_request(frame: Frame) -> LogsRequest | ExecRequest:
    """The request a ``LOGS`` / ``EXEC`` frame carries; raises :class:`TunnelFrameError` when invalid."""
    model: type[LogsRequest] | type[ExecRequest]
    if frame.type is FrameType.LOGS:
        model = LogsRequest
    elif frame.type is FrameType.EXEC:
        model = ExecRequest
    else:
        raise TunnelFrameError(f"a {frame.type.name} frame opens no session")
    try:
        return model.model_validate_json(frame.payload)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "payload"
        raise TunnelFrameError(f"{frame.type.name} request {where}: {first['msg']}") from exc


def exec_status(exit_code: int | None, message: str = "") -> bytes:
    """The ``metav1.Status`` ending an exec on the error channel, as kubelet writes it.

    ``exit_code`` 0: Success; another code: Failure ``NonZeroExitCode`` (``kubectl exec`` exits with it);
    ``None``: Failure with ``message`` (the command could not run).
    """
    status: dict[str, object] = {"metadata": {}, "status": "Success"}
    if exit_code is None:
        status = {"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError"}
    elif exit_code != 0:
        status = {
            "metadata": {},
            "status": "Failure",
            "message": message or f"command terminated with non-zero exit code: {exit_code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]},
        }
    return json.dumps(status).encode()
