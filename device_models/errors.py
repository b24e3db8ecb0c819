"""The root of every edgetwin exception, and the errors of the models themselves."""

from __future__ import annotations


class EdgetwinError(Exception):
    """Base class of every error edgetwin raises on purpose; callers never need to catch third-party types."""
