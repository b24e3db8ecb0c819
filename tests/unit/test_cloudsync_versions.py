"""resourceVersion ordering: numbers compare as numbers, anything else is newer when different."""

from __future__ import annotations

import pytest

from cloudsync import is_newer


@pytest.mark.parametrize(
    ("version", "than", "newer"),
    [
        ("5", None, True),
        ("5", "", True),
        ("10", "9", True),  # numerically, not as text
        ("9", "10", False),
        ("7", "7", False),
        ("007", "7", False),
        ("abc", "7", True),
        ("abc", "abc", False),
        ("²", "1", True),  # not an ASCII number: compared as an opaque string
    ],
)
def test_is_newer(version: str, than: str | None, newer: bool) -> None:
    assert is_newer(version, than) is newer
