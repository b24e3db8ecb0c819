"""PATCH bodies by Content-Type: JSON patch (RFC 6902), merge patch (RFC 7386) and strategic merge ≈ merge."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch

from edgetwin.testing.kubeapi.store import ApiStatusError, JsonObject

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, ``null`` deletes a key, anything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _without_directives(patch: Any) -> Any:
    """Drop strategic-merge directives (``$patch``, ``$setElementOrder/...``, ``$retainKeys``...)."""
    if isinstance(patch, dict):
        return {k: _without_directives(v) for k, v in patch.items() if not k.startswith("$")}
    if isinstance(patch, list):
        return [_without_directives(item) for item in patch]
    return patch


def apply_patch(current: JsonObject, content_type: str, body: bytes) -> JsonObject:
    """Apply a PATCH request body to ``current`` and return the new object (``current`` is left as it is).

    Strategic merge patches are applied as merge patches (lists are replaced, not merged by key).
    Server-side apply is refused with 415, as an apiserver refuses an unknown patch type.
    """
    media_type = content_type.split(";")[0].strip().lower()
    if media_type not in (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH):
        supported = ", ".join((JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH))
        raise ApiStatusError(
            415,
            "UnsupportedMediaType",
            f"the body of the request was in an unknown format - accepted media types include: {supported}"
            + (" (server-side apply is not emulated)" if media_type == APPLY_PATCH else ""),
        )
    try:
        patch = json.loads(body)
    except ValueError as exc:
        raise ApiStatusError(400, "BadRequest", f"error decoding patch: {exc}") from exc
    if media_type == JSON_PATCH:
        try:
            patched: JsonObject = jsonpatch.apply_patch(copy.deepcopy(current), patch)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError) as exc:
            raise ApiStatusError(422, "Invalid", f"the server rejected our request: {exc}") from exc
        return patched
    if not isinstance(patch, dict):
        raise ApiStatusError(400, "BadRequest", "a merge patch must be a JSON object")
    if media_type == STRATEGIC_MERGE_PATCH:
        patch = _without_directives(patch)
    merged: JsonObject = merge_patch(current, patch)
    return merged
