"""A child process that logs to a file and is always stopped: SIGTERM, then SIGKILL after a grace period."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Sequence
from pathlib import Path

from edgetwin.testing.kubeapi.errors import KubeApiStartError


class ManagedProcess:
    """A long-running component (etcd, kube-apiserver) started from ``argv``, its output in ``log_file``."""

    def __init__(self, name: str, argv: Sequence[str], log_file: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_file = log_file
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start the process; raise :class:`KubeApiStartError` if it cannot be executed."""
        with self.log_file.open("ab") as log:
            try:
                self._process = await asyncio.create_subprocess_exec(
                    *self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
                )
            except OSError as exc:
                raise KubeApiStartError(self.name, f"cannot execute {self.argv[0]}: {exc}") from exc

    @property
    def exited(self) -> bool:
        """Whether the process has ended (or never started)."""
        return self._process is None or self._process.returncode is not None

    @property
    def returncode(self) -> int | None:
        """The exit status once the process has ended."""
        return None if self._process is None else self._process.returncode

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the process's output, for error messages."""
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self, grace: float = 10.0) -> None:
        """Ask the process to stop (SIGTERM) and kill it if it is still running after ``grace`` seconds."""
        process = self._process
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        self._process = None
