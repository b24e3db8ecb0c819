"""Starting an aiohttp application on ``host:port``, the one way the certificate service, the stream port,
MetaServer and ``/healthz`` do it: a port that cannot be bound becomes the caller's
:class:`~device_models.ServeError` (which supervisors treat as fatal), and port 0 is read back."""

from __future__ import annotations

import ssl
from collections.abc import Callable

from aiohttp import web

from device_models import ServeError

__all__ = ["start_site"]


async def start_site(
    runner: web.AppRunner,
    host: str,
    port: int,
    *,
    error: Callable[[str], ServeError],
    ssl_context: ssl.SSLContext | None = None,
) -> int:
    """Set ``runner`` up and serve it on ``host:port``; return the port bound (the OS's pick for 0).

    When the address cannot be bound the runner is cleaned up and ``error(reason)`` is raised.
    """
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise error(exc.strerror or str(exc)) from exc
    return int(runner.addresses[0][1])
