"""Device status written back to the Kubernetes API: reported values, observed desired values, state,
conditions — coalesced per device and merge-patched on the ``status`` subresource.

Changes for one device that arrive within ``interval`` go out as one patch. ``status.twins`` and
``status.conditions`` are lists, which a merge patch replaces whole: the patch carries the complete lists
(the current ones from the controller's cache with the changes applied) and the object's
``metadata.resourceVersion``, so that a status written meanwhile by someone else is not lost — the API
answers 409, the writer reads the Device again and retries. Reported values of properties that the status
does not list yet are added (KubeEdge #5468).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cloudcore.devices.api import DeviceApi, JsonObject
from cloudcore.devices.metrics import DeviceControllerMetrics
from cloudcore.errors import KubeApiError, KubeConflictError, KubeNotFoundError, KubeUnavailableError

__all__ = ["StatusWriter", "condition"]

log = logging.getLogger(__name__)

#: Patches of different devices in flight together (each takes a worker thread and an API connection).
PATCH_CONCURRENCY = 8


def condition(kind: str, ok: bool, reason: str, message: str, generation: int | None) -> JsonObject:
    """A Kubernetes-style condition (``lastTransitionTime`` is set by the writer when the status changes)."""
    entry: JsonObject = {
        "type": kind,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
    }
    if generation is not None:
        entry["observedGeneration"] = generation
    return entry


@dataclass
class _Changes:
    """What is waiting to be written for one device."""

    reported: dict[str, JsonObject] = field(default_factory=dict)
    observed: dict[str, JsonObject] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)
    conditions: dict[str, JsonObject] = field(default_factory=dict)

    def merge(self, older: _Changes) -> None:
        """Put ``older`` (a failed write) under these newer changes."""
        self.reported = older.reported | self.reported
        self.observed = older.observed | self.observed
        self.fields = older.fields | self.fields
        self.conditions = older.conditions | self.conditions


class StatusWriter:
    """Coalesces status changes per device and patches them every ``interval`` seconds.

    ``cached(device_id)`` returns the controller's latest copy of the Device (``None`` once deleted);
    ``remember(obj)`` gives it a newer copy (a patch's answer, or the object read again after a 409).
    """

    def __init__(
        self,
        api: DeviceApi,
        cached: Callable[[str], JsonObject | None],
        remember: Callable[[JsonObject], None],
        metrics: DeviceControllerMetrics,
        *,
        interval: float = 0.2,
        max_attempts: int = 5,
    ) -> None:
        """Nothing is written before :meth:`start`."""
        self._api = api
        self._cached = cached
        self._remember = remember
        self._metrics = metrics
        self._interval = interval
        self._max_attempts = max_attempts
        self._pending: dict[str, _Changes] = {}
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._limit = asyncio.Semaphore(PATCH_CONCURRENCY)

    def start(self) -> None:
        """Start the flushing task."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="device-status-writer")

    async def stop(self) -> None:
        """Write what is pending (one attempt each), then stop."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await self._flush()

    def reported(self, device_id: str, prop: str, value: str, metadata: dict[str, str]) -> None:
        """Queue a reported value of ``prop``."""
        self._changes(device_id).reported[prop] = {"value": value, "metadata": metadata}

    def observed(self, device_id: str, prop: str, value: str, metadata: dict[str, str]) -> None:
        """Queue the desired value of ``prop`` the edge holds."""
        self._changes(device_id).observed[prop] = {"value": value, "metadata": metadata}

    def state(self, device_id: str, state: str, last_online: str | None) -> None:
        """Queue the device's state (and ``lastOnlineTime`` when given)."""
        changes = self._changes(device_id)
        changes.fields["state"] = state
        if last_online:
            changes.fields["lastOnlineTime"] = last_online

    def condition(self, device_id: str, entry: JsonObject) -> None:
        """Queue a condition (replaces the condition of the same type)."""
        self._changes(device_id).conditions[entry["type"]] = entry

    def forget(self, device_id: str) -> None:
        """Drop what is queued for a deleted device."""
        self._pending.pop(device_id, None)

    def _changes(self, device_id: str) -> _Changes:
        self._dirty.set()
        return self._pending.setdefault(device_id, _Changes())

    async def _run(self) -> None:
        while True:
            await self._dirty.wait()
            # Let a burst of reports gather: one patch per device per interval.
            await asyncio.sleep(self._interval)
            await self._flush()

    async def _flush(self) -> None:
        self._dirty.clear()
        batch, self._pending = self._pending, {}
        await asyncio.gather(*(self._write(device_id, changes) for device_id, changes in batch.items()))

    async def _write(self, device_id: str, changes: _Changes) -> None:
        namespace, _, name = device_id.partition("/")
        async with self._limit:
            for _attempt in range(self._max_attempts):
                current = self._cached(device_id)
                if current is None:
                    return
                patch = _patch(current, changes)
                if patch is None:
                    return
                try:
                    written = await self._api.patch_device_status(namespace, name, patch)
                except KubeConflictError:
                    self._metrics.status_conflicts.inc()
                    if not await self._reread(namespace, name):
                        return
                    continue
                except KubeNotFoundError:
                    return  # deleted meanwhile
                except KubeApiError as exc:
                    # Refused as it is (e.g. invalid): sending it again cannot help.
                    self._metrics.errors.labels("status").inc()
                    log.warning("device status refused: %s", exc, extra={"device": device_id})
                    return
                except KubeUnavailableError as exc:
                    self._retry_later(device_id, changes, str(exc))
                    return
                self._metrics.status_patches.inc()
                self._remember(written)
                return
        self._retry_later(device_id, changes, "too many conflicts")

    async def _reread(self, namespace: str, name: str) -> bool:
        try:
            self._remember(await self._api.get_device(namespace, name))
        except KubeNotFoundError:
            return False
        except (KubeApiError, KubeUnavailableError) as exc:
            self._metrics.errors.labels("status").inc()
            log.warning("cannot read device %s/%s again: %s", namespace, name, exc)
            return False
        return True

    def _retry_later(self, device_id: str, changes: _Changes, why: str) -> None:
        self._metrics.errors.labels("status").inc()
        log.warning("device status not written (%s); retrying", why, extra={"device": device_id})
        newer = self._pending.get(device_id)
        if newer is None:
            self._pending[device_id] = changes
        else:
            newer.merge(changes)
        self._dirty.set()


def _patch(current: JsonObject, changes: _Changes) -> JsonObject | None:
    """The merge patch applying ``changes`` to ``current``'s status; ``None`` when nothing would change."""
    status: JsonObject = dict(current.get("status") or {})
    new: JsonObject = {}
    if changes.reported or changes.observed:
        twins = [dict(twin) for twin in status.get("twins") or []]
        by_name = {twin.get("propertyName"): twin for twin in twins}
        for key, values in (("reported", changes.reported), ("observedDesired", changes.observed)):
            for prop, value in values.items():
                twin = by_name.get(prop)
                if twin is None:
                    twin = by_name[prop] = {"propertyName": prop}
                    twins.append(twin)
                twin[key] = value
        new["twins"] = twins
    for key, value in changes.fields.items():
        new[key] = value
    if changes.conditions:
        new["conditions"] = _conditions(status.get("conditions") or [], changes.conditions)
    if all(status.get(key) == value for key, value in new.items()):
        return None
    return {"metadata": {"resourceVersion": current["metadata"]["resourceVersion"]}, "status": new}


def _conditions(current: list[JsonObject], changes: dict[str, JsonObject]) -> list[JsonObject]:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result = []
    for entry in current:
        change = changes.get(entry.get("type", ""))
        result.append(entry if change is None else _transition(entry, change, now))
    known = {entry.get("type") for entry in current}
    result.extend(
        {**change, "lastTransitionTime": now} for kind, change in changes.items() if kind not in known
    )
    return result


def _transition(old: JsonObject, new: JsonObject, now: str) -> JsonObject:
    # lastTransitionTime moves only when the status flips, as Kubernetes conditions do.
    since = old.get("lastTransitionTime") if old.get("status") == new["status"] else None
    return {**new, "lastTransitionTime": since or now}
