"""The stream tunnel's frames and requests, and container log files as ``kubectl logs`` shows them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloudsync import (
    ExecRequest,
    Frame,
    FrameType,
    LogsRequest,
    TunnelFrameError,
    decode_frame,
    encode_frame,
    exec_status,
    read_request,
)
from edgecore.streamlogs import LogCursor, parse_line, render, tail_offset


def test_frames_round_trip_and_requests_keep_kubelets_names() -> None:
    request = LogsRequest(namespace="default", pod="web", container="main", follow=True, tail_lines=10)
    frame = Frame(2**32 - 1, FrameType.LOGS, request.model_dump_json(by_alias=True).encode())
    decoded = decode_frame(encode_frame(frame))
    assert decoded == frame
    assert read_request(decoded) == request
    assert json.loads(frame.payload)["tailLines"] == 10


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"\x00\x00", "shorter than"),
        (b"\x00\x00\x00\x01\x63", "unknown frame type 99"),
        ("text", "text message"),
    ],
)
def test_a_message_that_is_not_a_frame_is_refused_with_the_reason(message: bytes | str, reason: str) -> None:
    with pytest.raises(TunnelFrameError, match=reason):
        decode_frame(message)


def test_a_request_frame_is_validated() -> None:
    exec_frame = Frame(1, FrameType.EXEC, b'{"namespace": "d", "pod": "p", "container": "c", "command": []}')
    with pytest.raises(TunnelFrameError, match="command"):
        read_request(exec_frame)
    with pytest.raises(TunnelFrameError, match="DATA frame opens no session"):
        read_request(Frame(1, FrameType.DATA))
    assert read_request(
        Frame(1, FrameType.EXEC, exec_frame.payload.replace(b"[]", b'["ls"]'))
    ) == ExecRequest(namespace="d", pod="p", container="c", command=("ls",))


def test_exec_status_is_kubelets() -> None:
    assert json.loads(exec_status(0)) == {"metadata": {}, "status": "Success"}
    failed = json.loads(exec_status(2))
    assert failed["reason"] == "NonZeroExitCode"
    assert failed["details"]["causes"] == [{"reason": "ExitCode", "message": "2"}]
    assert json.loads(exec_status(None, "no such file"))["message"] == "no such file"


LOG = b"".join(
    [
        b"2024-05-01T10:00:00.000000001Z stdout F first\n",
        b"2024-05-01T10:00:01.5Z stderr P par\n",
        b"2024-05-01T10:00:01.6Z stderr F tial\n",
        b"not a CRI line\n",
        b"2024-05-01T10:00:02Z stdout F \n",
    ]
)


def test_log_lines_render_as_kubelet_serves_them() -> None:
    first = parse_line(b"2024-05-01T10:00:00.000000001Z stdout F first")
    assert first is not None
    assert render(first, timestamps=False) == b"first\n"
    assert render(first, timestamps=True) == b"2024-05-01T10:00:00.000000001Z first\n"
    partial = parse_line(b"2024-05-01T10:00:01.5Z stderr P par")
    assert partial is not None
    assert render(partial, timestamps=False) == b"par"  # continued by the next entry
    assert parse_line(b"garbage") is None
    at = partial.at()
    assert at is not None
    assert (at.second, at.microsecond) == (1, 500000)


def test_tail_offset_finds_the_last_lines(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    path.write_bytes(LOG)
    assert path.read_bytes()[tail_offset(path, 1) :] == b"2024-05-01T10:00:02Z stdout F \n"
    assert tail_offset(path, 5) == tail_offset(path, 50) == 0
    assert tail_offset(path, 0) == len(LOG)


def test_a_cursor_reads_complete_lines_only(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    path.write_bytes(LOG[:60])  # the second entry cut in the middle
    cursor = LogCursor(path)
    assert [line.content for line in cursor.read()] == [b"first"]
    path.write_bytes(LOG)
    assert [line.content for line in cursor.read()] == [b"par", b"tial", b""]  # the foreign line skipped
    assert cursor.read() == []
