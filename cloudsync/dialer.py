"""The edge's websocket connections to cloudcore — EdgeHub's link and the stream tunnel — dialled and kept up
the same way: the node certificate from a factory called on every attempt (a rotated certificate is used
without a restart), never through a proxy, refusals and TLS failures turned into a :class:`LinkError` with a
sentence a user can act on, and reconnection with jittered exponential backoff.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NoReturn

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidMessage, InvalidStatus, WebSocketException

from cloudsync.errors import LinkConnectionError, LinkError, LinkRefusedError
from eventbus import Backoff, BackoffPolicy

__all__ = ["dial", "keep_connected"]

log = logging.getLogger(__name__)


async def dial(
    url: str,
    ssl_context: Callable[[], ssl.SSLContext],
    *,
    host: str,
    handshake_timeout: float,
    ping_interval: float,
    close_timeout: float,
    headers: Mapping[str, str] | None = None,
    max_size: int | None = None,
) -> ClientConnection:
    """Open the websocket ``url`` with the client certificate of ``ssl_context()``; ``host`` is the name the
    server's certificate must carry. Raises :class:`LinkRefusedError` (an HTTP answer other than the upgrade,
    with the server's reason) or :class:`LinkConnectionError` (unreachable, no handshake in time, TLS)."""
    try:
        return await connect(
            url,
            ssl=ssl_context(),
            server_hostname=host,
            additional_headers=dict(headers or {}),
            proxy=None,  # the cloud is reached directly, never through a proxy of the environment
            compression=None,
            open_timeout=handshake_timeout,
            ping_interval=ping_interval,
            ping_timeout=ping_interval,
            close_timeout=close_timeout,
            max_size=max_size,
        )
    except InvalidStatus as exc:
        body = exc.response.body.decode("utf-8", "replace").strip() if exc.response.body else ""
        raise LinkRefusedError(url, exc.response.status_code, body or str(exc)) from exc
    except TimeoutError as exc:
        raise LinkConnectionError(url, f"no handshake within {handshake_timeout:g}s") from exc
    except (OSError, WebSocketException) as exc:
        raise LinkConnectionError(url, _reason(exc)) from exc
    except Exception as exc:
        # The TLS factory's errors (missing or unreadable certificate files): retried, and shown.
        raise LinkConnectionError(url, f"cannot set up TLS: {exc}") from exc


async def keep_connected(
    attempt: Callable[[], Awaitable[ClientConnection]],
    serve: Callable[[ClientConnection], Awaitable[None]],
    *,
    policy: BackoffPolicy,
    failed: Callable[[LinkError], None],
    why: Callable[[], object],
    what: str,
    extra: Mapping[str, Any],
) -> NoReturn:
    """Connect with ``attempt`` and ``serve`` each connection until it ends, for ever; ``failed`` learns why
    an attempt failed, ``why()`` is logged (with ``what`` names the link) before each backoff delay."""
    backoff = Backoff(policy)
    while True:
        try:
            connection = await attempt()
        except LinkError as exc:
            failed(exc)
        else:
            backoff.reset()
            await serve(connection)
        delay = backoff.next_delay()
        extra_fields = {**extra, "delay_s": round(delay, 3)}
        log.warning("%s down; reconnecting after backoff: %s", what, why(), extra=extra_fields)
        await asyncio.sleep(delay)


def _reason(exc: BaseException) -> str:
    """A sentence for a failed connection; a TLS failure is named as such even when websockets wraps it."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return f"TLS handshake failed: {seen.reason or seen}"
        if isinstance(seen, EOFError) and isinstance(exc, InvalidMessage):
            # With TLS 1.3 the server checks the client certificate after the client finished its side of
            # the handshake: a refused certificate shows up as a connection closed before any HTTP answer.
            return (
                "TLS handshake failed: the cloud closed the connection before answering"
                " (is the client certificate issued by the cloud's CA?)"
            )
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
