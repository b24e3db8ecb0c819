"""The one way edgetwin's HTTP servers bind: the OS's port read back, a taken port as the caller's error."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from aiohttp import web

from device_models import ServeError
from serving import host_of, join_host_port, split_host_port, start_site


def app() -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    application = web.Application()
    application.router.add_get("/", hello)
    return application


async def test_port_zero_is_read_back_and_served() -> None:
    runner = web.AppRunner(app())
    port = await start_site(runner, "127.0.0.1", 0, error=lambda reason: ServeError("test", "x", reason))
    try:
        assert port > 0
        url = f"http://{join_host_port('127.0.0.1', port)}/"
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            assert await response.text() == "hello"
    finally:
        await runner.cleanup()


async def test_a_taken_port_raises_the_callers_error_with_the_reason() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        runner = web.AppRunner(app())
        with pytest.raises(ServeError) as info:
            await start_site(
                runner, "127.0.0.1", port, error=lambda reason: ServeError("the test server", "here", reason)
            )
    assert str(info.value).startswith("the test server cannot serve on here: ")
    assert "in use" in info.value.reason
    assert runner.server is None  # cleaned up: nothing left serving


def test_ipv6_hosts_are_bracketed() -> None:
    assert join_host_port("::1", 10550) == "[::1]:10550"
    assert join_host_port("127.0.0.1", 10550) == "127.0.0.1:10550"


def test_addresses_split_the_way_they_are_joined() -> None:
    assert split_host_port("[::1]:10550") == ("::1", 10550)
    assert split_host_port("127.0.0.1:0") == ("127.0.0.1", 0)
    for bad in ("127.0.0.1", ":10550", "host:port", "host:70000"):
        assert split_host_port(bad) is None
    assert host_of("[fd00::1]:10000") == "fd00::1"
    assert host_of("cloud.example:10000") == "cloud.example"
