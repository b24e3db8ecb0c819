"""Container log files as ``kubectl logs`` shows them: the CRI log format read back, tail / since / limit.

The runtime writes each line a container prints as ``<RFC 3339 nano time> <stdout|stderr> <F|P> <text>``
(``P``: a partial line, continued by the next entry). :func:`render` gives the text kubelet serves — the
bare content, or with ``timestamps`` the time then a space. :func:`tail_offset` finds where the last
``n`` lines of a file begin without reading it all; :class:`LogCursor` reads a growing file from an offset,
complete lines only (a line the runtime is still writing waits for its end).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

__all__ = ["LogCursor", "LogLine", "parse_line", "render", "tail_offset"]

_BLOCK: Final = 64 * 1024


@dataclass(frozen=True)
class LogLine:
    """One entry of a CRI log file."""

    time: str
    stream: str
    partial: bool
    content: bytes

    def at(self) -> datetime | None:
        """The entry's time to the microsecond; ``None`` unless in the runtime's UTC form (``...Z``)."""
        if not self.time.endswith("Z"):
            return None
        whole, _, fraction = self.time[:-1].partition(".")
        try:
            moment = datetime.fromisoformat(whole).replace(tzinfo=UTC)
        except ValueError:
            return None
        micros = int((fraction + "000000")[:6]) if fraction.isdigit() else 0
        return moment + timedelta(microseconds=micros)


def parse_line(raw: bytes) -> LogLine | None:
    """One CRI log line (without its newline); ``None`` when it is not in that format."""
    parts = raw.split(b" ", 3)
    if len(parts) < 3 or parts[2] not in (b"F", b"P"):
        return None
    content = parts[3] if len(parts) == 4 else b""
    return LogLine(
        parts[0].decode("ascii", "replace"), parts[1].decode("ascii", "replace"), parts[2] == b"P", content
    )


def render(line: LogLine, *, timestamps: bool) -> bytes:
    """The entry as kubelet serves it: the text, a newline unless partial, the time first if asked."""
    text = line.content if line.partial else line.content + b"\n"
    return line.time.encode() + b" " + text if timestamps else text


def tail_offset(path: Path, lines: int) -> int:
    """The offset where the last ``lines`` lines of ``path`` begin (0: the whole file); blocking I/O."""
    with path.open("rb") as file:
        end = file.seek(0, os.SEEK_END)
        if lines <= 0:
            return end
        position, seen = end, 0
        while position > 0:
            start = max(0, position - _BLOCK)
            file.seek(start)
            block = file.read(position - start)
            index = len(block)
            while (index := block.rfind(b"\n", 0, index)) != -1:
                if start + index == end - 1:
                    continue  # the last line's own newline starts no line
                seen += 1
                if seen == lines:
                    return start + index + 1
            position = start
    return 0


class LogCursor:
    """Reads the complete lines appended to a log file since the last read, from ``offset``."""

    def __init__(self, path: Path, offset: int = 0) -> None:
        self.path = path
        self.offset = offset
        self._pending = b""

    def read(self, limit: int = _BLOCK) -> list[LogLine]:
        """The complete lines appended since the last call (at most about ``limit`` bytes); blocking I/O."""
        with self.path.open("rb") as file:
            file.seek(self.offset)
            chunk = file.read(limit)
        self.offset += len(chunk)
        data = self._pending + chunk
        complete, newline, self._pending = data.rpartition(b"\n")
        if not newline:
            self._pending = data
            return []
        lines = (parse_line(raw) for raw in complete.split(b"\n"))
        return [line for line in lines if line is not None]
