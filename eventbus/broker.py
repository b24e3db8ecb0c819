"""A managed mosquitto: the broker of edgecore's "internal" MQTT mode, of the tests and of the demo.

:class:`MosquittoBroker` writes ``mosquitto.conf`` (and a password file, TLS settings, persistence) in its
work directory, starts the Debian ``mosquitto`` binary, waits until it accepts connections and stops it with
SIGTERM (SIGKILL after a grace period). The process is a plain :class:`subprocess.Popen` polled from the loop,
so a broker started on one event loop can be stopped from another (a session-wide test broker).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from eventbus.errors import BrokerNotInstalledError, BrokerPortInUseError, BrokerStartError
from eventbus.settings import BrokerSettings

log = logging.getLogger(__name__)

__all__ = ["BrokerTls", "MosquittoBroker", "find_program"]

_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
_POLL = 0.02


def find_program(name: str) -> str:
    """Path of a mosquitto program (``mosquitto``, ``mosquitto_passwd``): PATH first, then the sbin dirs."""
    found = shutil.which(name)
    if found:
        return found
    for directory in _SBIN_DIRS:
        candidate = Path(directory) / name
        if os.access(candidate, os.X_OK):
            return str(candidate)
    raise BrokerNotInstalledError(name, ("PATH", *_SBIN_DIRS))


@dataclass(frozen=True)
class BrokerTls:
    """TLS for the listener (PEM files): the server's certificate and key.

    ``ca_file`` is the CA that signs client certificates; with ``require_certificate`` clients must present
    one (mutual TLS).
    """

    cert_file: Path
    key_file: Path
    ca_file: Path | None = None
    require_certificate: bool = False


class MosquittoBroker:
    """One mosquitto process listening on ``host:port``, configured and owned by this object.

    ``users`` (name → password) turns anonymous access off; ``persistence`` keeps sessions, retained and
    queued messages in ``workdir`` across :meth:`restart`.
    """

    def __init__(
        self,
        port: int,
        *,
        host: str = "127.0.0.1",
        workdir: Path,
        users: dict[str, str] | None = None,
        tls: BrokerTls | None = None,
        persistence: bool = False,
        start_timeout: float = 10.0,
    ) -> None:
        self.port = port
        self.host = host
        self.workdir = workdir
        self.users = dict(users) if users else None
        self.tls = tls
        self.persistence = persistence
        self.start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_offset = 0

    def __repr__(self) -> str:
        return f"<MosquittoBroker {self.url} {'running' if self.running else 'stopped'}>"

    @property
    def url(self) -> str:
        """``tcp://host:port``, or ``ssl://host:port`` with TLS."""
        return f"{'ssl' if self.tls else 'tcp'}://{self.host}:{self.port}"

    @property
    def config_file(self) -> Path:
        """The generated ``mosquitto.conf``."""
        return self.workdir / "mosquitto.conf"

    @property
    def pid_file(self) -> Path:
        """The broker's pid, so that a restarted owner can stop a broker that its killed predecessor left."""
        return self.workdir / "mosquitto.pid"

    @property
    def log_file(self) -> Path:
        """mosquitto's log (stdout and stderr), appended to across restarts."""
        return self.workdir / "mosquitto.log"

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The process id while running."""
        return self._process.pid if self.running and self._process is not None else None

    def settings(
        self, *, username: str | None = None, password: str | None = None, ca_file: Path | None = None
    ) -> BrokerSettings:
        """Client settings for this broker (``ca_file`` verifies a TLS listener's certificate)."""
        return BrokerSettings(url=self.url, username=username, password=password, ca_file=ca_file)

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of mosquitto's log."""
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    async def start(self) -> None:
        """Write the configuration, start mosquitto and wait until it accepts TCP connections.

        Raises :class:`BrokerStartError` (with the log's tail) if it exits or is not ready in time, and its
        :class:`BrokerPortInUseError` when the port is taken.
        """
        if self.running:
            return
        binary = find_program("mosquitto")
        self.workdir.mkdir(parents=True, exist_ok=True)
        await self._stop_leftover()
        if self.users:
            await self._write_passwords(self.users)
        self.config_file.write_text(self._config())
        self._log = self.log_file.open("ab")
        self._log_offset = self._log.tell()
        self._process = subprocess.Popen(  # noqa: ASYNC220 - fork/exec only, as asyncio's subprocess does
            [binary, "-c", str(self.config_file)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C in the owner's terminal must not stop the broker before the owner
            # has stopped the modules that use it.
            start_new_session=True,
        )
        self.pid_file.write_text(f"{self._process.pid}\n")
        try:
            await self._wait_ready(self._process)
        except BaseException:
            await self.stop()
            raise

    async def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; idempotent."""
        process, self._process = self._process, None
        if process is not None:
            self.pid_file.unlink(missing_ok=True)
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            if not await _exited(process, timeout):
                process.kill()
                await _exited(process, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    async def restart(self) -> None:
        """Stop and start again on the same port with the same configuration (and persisted state)."""
        await self.stop()
        await self.start()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def _config(self) -> str:
        lines = [
            "# Written by edgetwin (eventbus.broker); rewritten at every start.",
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'false' if self.users else 'true'}",
            # Small request/reply messages: without it Nagle + delayed ACK add ~40 ms to every round trip.
            "set_tcp_nodelay true",
        ]
        if self.users:
            lines.append(f"password_file {self.workdir / 'passwd'}")
        if self.tls:
            lines += [f"certfile {self.tls.cert_file}", f"keyfile {self.tls.key_file}"]
            if self.tls.ca_file:
                lines.append(f"cafile {self.tls.ca_file}")
            lines.append(f"require_certificate {'true' if self.tls.require_certificate else 'false'}")
        lines += [
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            # Clients keep MQTT 3.1.1 sessions (clean_session false); one that crashed must not hold its
            # session and queued messages forever.
            "persistent_client_expiration 1h",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        if os.geteuid() == 0:
            # As root, mosquitto would switch to the "mosquitto" user, which cannot read our work directory.
            lines.append("user root")
        return "\n".join(lines) + "\n"

    async def _write_passwords(self, users: dict[str, str]) -> None:
        passwd = self.workdir / "passwd"
        passwd.unlink(missing_ok=True)
        passwd.touch(mode=0o600)
        program = find_program("mosquitto_passwd")
        for user, password in users.items():
            # -b takes the password on the command line: acceptable for a local test/demo broker.
            result = await asyncio.to_thread(
                subprocess.run,
                [program, "-b", str(passwd), user, password],
                capture_output=True,
                check=False,
            )
            if result.returncode != 0:
                raise BrokerStartError(
                    self.port,
                    f"mosquitto_passwd failed for user {user!r}",
                    result.stderr.decode(errors="replace"),
                )

    def _logged_running(self) -> bool:
        with self.log_file.open("rb") as log:
            log.seek(self._log_offset)
            return b" running" in log.read()

    async def _stop_leftover(self) -> None:
        """Stop a broker on this configuration that a previous owner (killed with SIGKILL) left running."""
        pid = _leftover(self.pid_file, self.config_file)
        if pid is None:
            return
        log.warning("stopping the mosquitto (pid %d) a previous owner left running in %s", pid, self.workdir)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        for _ in range(250):
            if not process_running(pid):
                break
            await asyncio.sleep(0.02)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)

    async def _wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        while True:
            code = process.poll()
            if code is not None:
                tail = self.log_tail()
                if "Address already in use" in tail:
                    raise BrokerPortInUseError(self.host, self.port, tail)
                raise BrokerStartError(self.port, f"mosquitto exited with code {code}", tail)
            # The log line rules out another process answering on a port mosquitto failed to bind.
            if self._logged_running() and await _accepts(self.host, self.port):
                return
            if loop.time() >= deadline:
                raise BrokerStartError(self.port, f"not ready after {self.start_timeout:g}s", self.log_tail())
            await asyncio.sleep(_POLL)


async def _accepts(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setblocking(False)
        try:
            async with asyncio.timeout(1.0):
                await asyncio.get_running_loop().sock_connect(sock, (host, port))
        except (OSError, TimeoutError):
            return False
    return True


async def _exited(process: subprocess.Popen[bytes], timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while process.poll() is None:
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(_POLL)
    return True


def _leftover(pid_file: Path, config_file: Path) -> int | None:
    """The pid in ``pid_file`` if that process is still a mosquitto running ``config_file``."""
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    # A reused pid belongs to another program: leave it alone.
    return pid if str(config_file).encode() in cmdline and process_running(pid) else None


def process_running(pid: int) -> bool:
    """Whether ``pid`` exists and has not exited (a zombie waiting to be reaped counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
