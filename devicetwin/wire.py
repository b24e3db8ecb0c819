"""Reading requests off MQTT and turning refusals into error results, as KubeEdge apps expect them."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import ValidationError

from device_models import BaseMessage, EdgetwinError, ErrorResult, TwinValidationError, now_ms
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
