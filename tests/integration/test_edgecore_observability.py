"""The /healthz and /metrics server (shared by edgecore and the mappers) and the structured log lines."""

from __future__ import annotations

import io
import json
import logging

import aiohttp
import pytest
from prometheus_client import Counter

from edgetwin.logs import LogFormat, setup_logging
from edgetwin.observability import HealthReport, ObservabilityError, ObservabilityServer, new_registry
from edgetwin.testing import free_port


async def test_healthz_follows_health_and_metrics_serve_the_registry() -> None:
    registry = new_registry()
    Counter("edgetwin_test_events", "events seen by the test", registry=registry).inc(3)
    state = {"healthy": True}

    def health() -> HealthReport:
        return HealthReport(state["healthy"], {"modules": {"twin": {"state": "running"}}})

    async with (
        ObservabilityServer("127.0.0.1:0", registry=registry, health=health) as server,
        aiohttp.ClientSession() as http,
    ):
        assert server.port > 0
        async with http.get(f"{server.url}/healthz") as response:
            assert response.status == 200
            assert await response.json() == {"status": "ok", "modules": {"twin": {"state": "running"}}}
        state["healthy"] = False
        async with http.get(f"{server.url}/healthz") as response:
            assert response.status == 503
            assert (await response.json())["status"] == "unhealthy"
        async with http.get(f"{server.url}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=")
            text = await response.text()
    assert "edgetwin_test_events_total 3.0" in text
    assert "process_resident_memory_bytes" in text


async def test_port_in_use_is_a_clear_error() -> None:
    port = free_port()
    health = lambda: HealthReport(True)  # noqa: E731 - a one-line health source
    async with ObservabilityServer(f"127.0.0.1:{port}", registry=new_registry(), health=health):
        second = ObservabilityServer(f"127.0.0.1:{port}", registry=new_registry(), health=health)
        with pytest.raises(ObservabilityError, match=f"127.0.0.1:{port}"):
            await second.start()


@pytest.mark.parametrize("address", ["10256", "127.0.0.1:", ":10256", "127.0.0.1:99999"])
def test_bad_address_is_rejected(address: str) -> None:
    with pytest.raises(ObservabilityError, match="host:port"):
        ObservabilityServer(address, registry=new_registry(), health=lambda: HealthReport(True))


@pytest.mark.parametrize("fmt", [LogFormat.TEXT, LogFormat.JSON])
def test_log_lines_are_one_per_event_with_extra_fields(fmt: LogFormat) -> None:
    stream = io.StringIO()
    setup_logging("debug", fmt=fmt, node="edge-node-1", stream=stream)
    try:
        log = logging.getLogger("edgecore.test")
        log.info("twin updated", extra={"device": "default/thermostat-01", "msg_id": "m-1"})
        log.error("update failed", exc_info=ValueError("bad\nvalue"), extra={"device": "default/x y"})
        log.debug("hidden detail", extra={"node": "other-node"})
    finally:
        setup_logging("warning", stream=io.StringIO())
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    if fmt is LogFormat.JSON:
        first, second, third = (json.loads(line) for line in lines)
        assert first["msg"] == "twin updated"
        assert first["level"] == "info"
        assert first["device"] == "default/thermostat-01"
        assert first["msg_id"] == "m-1"
        assert first["node"] == "edge-node-1"
        assert "ValueError: bad\nvalue" in second["exc"]
        assert third["node"] == "other-node"
    else:
        assert 'msg="twin updated"' in lines[0]
        assert "device=default/thermostat-01" in lines[0]
        assert "msg_id=m-1" in lines[0]
        assert "node=edge-node-1" in lines[0]
        assert "level=info" in lines[0]
        assert 'device="default/x y"' in lines[1]
        assert "ValueError: bad\\nvalue" in lines[1]
        assert "node=other-node" in lines[2]


def test_log_level_filters() -> None:
    stream = io.StringIO()
    setup_logging("warning", stream=stream)
    try:
        logging.getLogger("edgecore.test").info("not shown")
        logging.getLogger("edgecore.test").warning("shown")
    finally:
        setup_logging("warning", stream=io.StringIO())
    assert "not shown" not in stream.getvalue()
    assert "msg=shown" in stream.getvalue()
