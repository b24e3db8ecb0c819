"""Structured logging shared by every daemon and mapper command: one line per event.

Each record becomes one line, either ``key=value`` pairs (the default, easy to grep) or a JSON object.
Fields passed with ``extra`` (``node``, ``device``, ``msg_id``, ``event_id``, ...) are written as fields of
their own, so ``grep device=default/thermostat-01`` finds every line about one device.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from enum import StrEnum
from typing import Any, TextIO

__all__ = ["JsonFormatter", "KeyValueFormatter", "LogFormat", "LogLevel", "setup_logging"]

# Attributes every LogRecord has; anything else on a record came from `extra` and is written as a field.
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", logging.INFO, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)
# Libraries that log every single call at DEBUG; their chatter would drown our own debug lines.
_CHATTY_LOGGERS = ("aiosqlite", "asyncio")


class LogLevel(StrEnum):
    """The levels a ``--log-level`` flag accepts."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class LogFormat(StrEnum):
    """The line formats a ``--log-format`` flag accepts."""

    TEXT = "text"
    JSON = "json"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields of one record, in a stable order: time, level, logger, message, then `extra` fields."""
    created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    fields: dict[str, Any] = {
        "ts": f"{created}.{int(record.msecs):03d}Z",
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    fields.update(
        (key, value)
        for key, value in record.__dict__.items()
        if key not in _RECORD_ATTRIBUTES and not key.startswith("_")
    )
    if record.exc_info:
        fields["exc"] = logging.Formatter().formatException(record.exc_info)
    return fields


def _kv_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, separators=(",", ":"))
    if text and not any(ch in text for ch in ' "=\\\n\r\t'):
        return text
    # json.dumps quotes and escapes newlines, so a traceback stays on the event's one line.
    return json.dumps(text)


class KeyValueFormatter(logging.Formatter):
    """``ts=... level=info logger=edgecore msg="..." node=edge-1 device=default/x`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as one line of ``key=value`` pairs."""
        return " ".join(f"{key}={_kv_value(value)}" for key, value in _fields(record).items())


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the same fields as :class:`KeyValueFormatter`."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as one line of JSON."""
        return json.dumps(_fields(record), default=str, separators=(",", ":"))


class _NodeFilter(logging.Filter):
    """Stamps the process's node name on records that do not name a node themselves."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self._node = node

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "node"):
            record.node = self._node
        return True


class _StructuredHandler(logging.StreamHandler[TextIO]):
    """The handler :func:`setup_logging` installs, told apart from handlers others installed."""


def setup_logging(
    level: LogLevel | str = LogLevel.INFO,
    *,
    fmt: LogFormat | str = LogFormat.TEXT,
    node: str | None = None,
    stream: TextIO | None = None,
) -> None:
    """Route every logger of the process to one handler writing structured lines to ``stream`` (stderr).

    ``node``, when given, is added to each line that does not carry its own ``node`` field. Calling it
    again replaces the handler of the previous call (the demo calls it more than once in a process).
    """
    level_name = LogLevel(str(level).lower()).name
    formatter: logging.Formatter = (
        JsonFormatter() if LogFormat(fmt) is LogFormat.JSON else KeyValueFormatter()
    )
    handler = _StructuredHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    if node:
        handler.addFilter(_NodeFilter(node))
    root = logging.getLogger()
    for old in root.handlers[:]:
        # Only our own earlier handler goes: others (pytest's capture, an embedding app's) stay.
        if isinstance(old, _StructuredHandler):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_name)
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
