"""Reading requests off MQTT, writing the replies of the twin's hot path, and turning refusals into error
results, as KubeEdge apps expect them.

Requests are validated by the pydantic models of :mod:`device_models`. The messages of every twin update
(result, document, delta) are written here from plain dicts with ``json.dumps``: the twin built their content
itself, so validating it again through the models, as their constructors do, would only cost time. They are
byte for byte what the models write (``tests/unit/test_twin_wire.py`` holds them to it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import ValidationError

from device_models import (
    BaseMessage,
    EdgetwinError,
    ErrorResult,
    MsgTwin,
    TwinDoc,
    TwinValidationError,
    TwinValue,
    now_ms,
)
from devicetwin.errors import BAD_REQUEST, INTERNAL_ERROR, DeviceTwinError, TwinRequestError

#: Larger payloads are refused unread (400).
MAX_PAYLOAD = 1 << 20

M = TypeVar("M", bound=BaseMessage)


def _load_object(payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_PAYLOAD:
        raise TwinRequestError(f"the payload has {len(payload)} bytes, more than the {MAX_PAYLOAD} allowed")
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise TwinRequestError(f"the payload is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise TwinRequestError(f"the payload must be a JSON object, not {type(data).__name__}")
    return data


def decode_request(payload: bytes, model: type[M]) -> M:
    """Parse an MQTT request body; raises :class:`TwinRequestError` (400) naming what is wrong."""
    if len(payload) <= MAX_PAYLOAD:
        try:
            # pydantic parses the JSON itself: the fast way for the requests that are fine.
            return model.model_validate_json(payload)
        except ValidationError:
            pass  # read it again below, to say what is wrong the way apps are told
    data = _load_object(payload)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        location = first["loc"]
        where = ".".join(str(part) for part in location) or "body"
        prop = location[1] if len(location) > 1 and location[0] == "twin" else None
        raise TwinRequestError(
            f"{where}: {first['msg']}", prop=prop if isinstance(prop, str) else None
        ) from exc


def peek_event_id(payload: bytes) -> str:
    """The request's ``event_id`` if it can be read from a refused payload, else ``""``."""
    try:
        data = _load_object(payload)
    except TwinRequestError:
        return ""
    event_id = data.get("event_id")
    return event_id if isinstance(event_id, str) else ""


def error_result(event_id: str, error: EdgetwinError) -> ErrorResult:
    """The error answer for ``error``: its code (400 / 404 / 500), reason and, if known, the property."""
    code = error.code if isinstance(error, DeviceTwinError) else INTERNAL_ERROR
    prop = error.property if isinstance(error, TwinRequestError | TwinValidationError) else None
    if isinstance(error, TwinValidationError):
        code = BAD_REQUEST
    return ErrorResult(event_id=event_id, timestamp=now_ms(), code=code, reason=str(error), property=prop)


def _value(value: TwinValue) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if value.value is not None:
        out["value"] = value.value
    if value.metadata is not None:
        timestamp = value.metadata.timestamp
        out["metadata"] = {} if timestamp is None else {"timestamp": timestamp}
    return out


def app_twin(twin: MsgTwin) -> dict[str, Any]:
    """``twin`` as MQTT apps see it: absent fields left out, versions never shown."""
    out: dict[str, Any] = {}
    if twin.expected is not None:
        out["expected"] = _value(twin.expected)
    if twin.actual is not None:
        out["actual"] = _value(twin.actual)
    if twin.optional is not None:
        out["optional"] = twin.optional
    if twin.metadata is not None:
        out["metadata"] = {} if twin.metadata.type is None else {"type": twin.metadata.type}
    return out


def _dumps(message: dict[str, Any]) -> bytes:
    # As pydantic writes JSON: compact, UTF-8 unescaped. A lone surrogate (which JSON text may carry in an
    # event_id) has no UTF-8 form: backslashreplace writes it as the JSON escape \udXXX it came in as.
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "backslashreplace")


def encode_update_result(event_id: str, timestamp: int, twins: Mapping[str, MsgTwin | None]) -> bytes:
    """``twin/update/result``: what the update touched, ``null`` for a deleted property."""
    changed = {name: None if twin is None else app_twin(twin) for name, twin in twins.items()}
    return _dumps({"event_id": event_id, "timestamp": timestamp, "twin": changed})


def encode_document(event_id: str, timestamp: int, docs: Mapping[str, TwinDoc]) -> bytes:
    """``twin/update/document``: last and current state (``null`` when absent) of each changed property."""
    twin = {
        name: {
            "last": None if doc.last is None else app_twin(doc.last),
            "current": None if doc.current is None else app_twin(doc.current),
        }
        for name, doc in docs.items()
    }
    return _dumps({"event_id": event_id, "timestamp": timestamp, "twin": twin})


def encode_delta(
    event_id: str, timestamp: int, twins: Mapping[str, MsgTwin], delta: Mapping[str, str]
) -> bytes:
    """``twin/update/delta``: every live property, and each desired value that differs from the reported."""
    live = {name: app_twin(twin) for name, twin in twins.items()}
    return _dumps({"event_id": event_id, "timestamp": timestamp, "twin": live, "delta": dict(delta)})
