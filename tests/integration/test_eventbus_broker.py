"""The managed mosquitto: configuration, login, persistence across restarts, and clear start errors."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import pytest

from edgetwin.testing import free_port, wait_for
from edgetwin.testing.mosquitto import MqttProbe
from eventbus import BrokerNotInstalledError, BrokerPortInUseError, MosquittoBroker, find_program
from eventbus.broker import process_running
from tests.fixtures.mqtt import BrokerFactory


def test_missing_program_says_what_to_install() -> None:
    with pytest.raises(BrokerNotInstalledError) as info:
        find_program("mosquitto-no-such-program")
    assert "install the Debian package mosquitto" in str(info.value)
    assert "/usr/sbin" in info.value.searched


async def test_port_in_use_fails_with_mosquittos_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        broker = MosquittoBroker(taken.getsockname()[1], workdir=tmp_path)
        with pytest.raises(BrokerPortInUseError) as info:
            await broker.start()
    assert "Address already in use" in info.value.log_tail
    assert f"mosquitto cannot serve on 127.0.0.1:{broker.port}: the port is in use" in str(info.value)
    assert not broker.running


async def test_context_manager_runs_and_stops_the_process(tmp_path: Path) -> None:
    async with MosquittoBroker(free_port(), workdir=tmp_path) as broker:
        pid = broker.pid
        assert pid is not None
        assert broker.url == f"tcp://127.0.0.1:{broker.port}"
        assert "allow_anonymous true" in broker.config_file.read_text()
        with MqttProbe(broker.url) as probe:
            probe.subscribe("ping")
    assert not broker.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone, and reaped
    await broker.stop()  # idempotent


async def test_users_turn_anonymous_access_off(mosquitto_factory: BrokerFactory) -> None:
    broker = await mosquitto_factory(users={"alice": "s3cret-pw"})
    config = broker.config_file.read_text()
    assert "allow_anonymous false" in config
    passwd = broker.workdir / "passwd"
    assert "alice:" in passwd.read_text()
    assert "s3cret-pw" not in passwd.read_text()
    assert os.stat(passwd).st_mode & 0o077 == 0
    with MqttProbe(broker.url, username="alice", password="s3cret-pw") as probe:
        probe.subscribe("x")


async def test_persistence_keeps_retained_messages_across_restart(mosquitto_factory: BrokerFactory) -> None:
    broker = await mosquitto_factory(persistence=True)
    with MqttProbe(broker.url) as publisher:
        publisher.publish("state/thermostat", "21.5", retain=True)
    await broker.restart()
    with MqttProbe(broker.url) as reader:
        reader.subscribe("state/#")
        message = reader.wait_message("state/thermostat")
    assert (message.text, message.retain) == ("21.5", True)


async def test_a_broker_left_by_a_killed_owner_is_replaced(tmp_path: Path) -> None:
    """edgecore killed with SIGKILL leaves its mosquitto running; the next start must not fail on the port."""
    port = free_port()
    owner = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from eventbus import MosquittoBroker\n"
        "async def main():\n"
        f"    broker = MosquittoBroker({port}, workdir=Path({str(tmp_path)!r}))\n"
        "    await broker.start()\n"
        "    print(broker.pid, flush=True)\n"
        "    await asyncio.Event().wait()\n"
        "asyncio.run(main())\n",
        stdout=asyncio.subprocess.PIPE,
    )
    assert owner.stdout is not None
    orphan = int(await asyncio.wait_for(owner.stdout.readline(), 10))
    owner.kill()
    await owner.wait()
    assert process_running(orphan)  # the owner is gone, its broker is not

    async with MosquittoBroker(port, workdir=tmp_path) as broker:
        assert broker.pid != orphan
        await wait_for(lambda: not process_running(orphan), what="the orphan to exit")
        with MqttProbe(broker.url) as probe:
            probe.subscribe("ping")
    assert not broker.pid_file.exists()
