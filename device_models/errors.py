"""The root of every edgetwin exception, and the errors of the models themselves."""

from __future__ import annotations

from collections.abc import Iterable

from device_models.problems import Problem


class EdgetwinError(Exception):
    """Base class of every error edgetwin raises on purpose; callers never need to catch third-party types."""


class ModelValidationError(EdgetwinError):
    """A Device / DeviceModel document (or a protocol config in one) is invalid.

    ``problems`` lists every problem found, each with its file, object, field path, bad value and reason;
    ``str(error)`` is one line per problem, ready to show to the user.
    """

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))
