"""How the daemon commands run: on uvloop when it is installed (asyncio's own loop otherwise), with the cyclic
garbage collector tuned for processing messages.

uvloop runs the daemons' hot path (MQTT transports, callbacks, futures) markedly faster; it has no Windows
build, hence the fallback. Tests and library code keep whatever loop and collector settings their caller has.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["GC_THRESHOLD", "run"]

T = TypeVar("T")

#: The daemons' first-generation threshold of the cyclic garbage collector (CPython's default is 700).
GC_THRESHOLD = 10_000

_loop_factory: Callable[[], asyncio.AbstractEventLoop] | None
try:
    import uvloop
except ImportError:
    _loop_factory = None
else:
    _loop_factory = uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a new event loop, as :func:`asyncio.run` does, and return its result.

    While it runs, the collector's first generation holds :data:`GC_THRESHOLD` objects. Every MQTT message
    allocates dozens of short-lived containers: at the default threshold a collection came every few messages
    and promoted the objects of the messages still in flight, whose numbers then set off full collections of
    the whole heap (10-17 % of edgecore's CPU in the twin throughput bench). The previous thresholds are
    restored on return.
    """
    thresholds = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, *thresholds[1:])
    try:
        with asyncio.Runner(loop_factory=_loop_factory) as runner:
            return runner.run(main)
    finally:
        gc.set_threshold(*thresholds)
