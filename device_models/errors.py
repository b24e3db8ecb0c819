"""The root of every edgetwin exception, and the errors of the models themselves."""

from __future__ import annotations

from collections.abc import Iterable

from device_models.problems import Problem


class EdgetwinError(Exception):
    """Base class of every error edgetwin raises on purpose; callers never need to catch third-party types."""


class ServeError(EdgetwinError):
    """``server`` cannot listen on ``address``: ``reason`` (a port taken, an address not on this machine).

    Supervisors treat it as fatal: restarting frees no port, so the process stops and names the address.
    """

    def __init__(self, server: str, address: str, reason: str) -> None:
        super().__init__(f"{server} cannot serve on {address}: {reason}")
        self.server = server
        self.address = address
        self.reason = reason


class ModelValidationError(EdgetwinError):
    """A Device / DeviceModel document (or a protocol config in one) is invalid.

    ``problems`` lists every problem found, each with its file, object, field path, bad value and reason;
    ``str(error)`` is one line per problem, ready to show to the user.
    """

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))
