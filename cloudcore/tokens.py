"""A ready-made join token where KubeEdge users look for one: ``tokendata`` of ``kubeedge/tokensecret``.

KubeEdge's cloudcore keeps a token there and replaces it every ``tokenRefreshDuration`` hours;
``keadm gettoken`` and many scripts (``kubectl get secret tokensecret -o jsonpath='{.data.tokendata}'``) read
it. edgetwin does the same, and makes each token valid for twice the refresh period, so that one read just
before a refresh still has a whole period to be used. ``edgetwin gettoken`` mints a fresh token instead.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from kubernetes import client as k8s

from cloudcore.secrets import publish_token
from cloudsync import TokenAuthority
from cloudsync.tasks import cancel_task

__all__ = ["TokenPublisher"]

log = logging.getLogger(__name__)


class TokenPublisher:
    """Supervised module: publishes a token at start, then again every ``refresh``."""

    name = "tokenpublisher"

    def __init__(
        self, api: k8s.ApiClient, tokens: TokenAuthority, namespace: str, *, refresh: timedelta
    ) -> None:
        self._api = api
        self._tokens = tokens
        self._namespace = namespace
        self._refresh = refresh
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Publish a token now (raises when the API refuses), then keep refreshing it."""
        await self._publish()
        self._task = asyncio.create_task(self._refreshing(), name="tokenpublisher")

    async def wait(self) -> None:
        """Return or raise when refreshing failed (the supervisor starts the module again)."""
        if self._task is not None:
            await self._task

    async def stop(self) -> None:
        """Stop refreshing; the token published stays valid until it expires."""
        task, self._task = self._task, None
        await cancel_task(task)

    async def _refreshing(self) -> None:
        while True:
            await asyncio.sleep(self._refresh.total_seconds())
            await self._publish()

    async def _publish(self) -> None:
        await publish_token(self._api, self._tokens.issue(2 * self._refresh), self._namespace)
        log.info(
            "join token refreshed in the tokensecret",
            extra={
                "namespace": self._namespace,
                "valid_hours": round(2 * self._refresh.total_seconds() / 3600, 2),
            },
        )
