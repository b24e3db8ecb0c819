"""Edged's rules that need no runtime: ``$(VAR)`` expansion, kubelet's phase rules, atomic volume writes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from edgecore.edged import ContainerInfo, ContainerState, expand, pod_status, write_atomic
from edgecore.edged.status import ContainerView

T0 = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)-$(B)", "1-two"),
        ("$$(A)", "$(A)"),  # escaped
        ("$(MISSING)", "$(MISSING)"),  # unknown names stay
        ("$(A", "$(A"),  # unclosed
        ("cost: $5 $", "cost: $5 $"),
    ],
)
def test_expansion_follows_kubernetes(text: str, expected: str) -> None:
    assert expand(text, {"A": "1", "B": "two"}) == expected


def info(state: ContainerState, exit_code: int | None = None, restarts: int = 0) -> ContainerInfo:
    return ContainerInfo(
        id=f"c{restarts}",
        sandbox_id="s",
        name="main",
        pod_name="p",
        pod_namespace="default",
        pod_uid="u",
        image="img",
        image_ref="sha256:x",
        state=state,
        restart_count=restarts,
        created_at=T0,
        started_at=T0,
        finished_at=T0 if state == ContainerState.EXITED else None,
        exit_code=exit_code,
    )


def phase(policy: str, *views: ContainerView) -> str:
    pod: dict[str, Any] = {"spec": {"restartPolicy": policy}}
    status = pod_status(pod, views, pod_ip="", host_ip="", start_time=None, previous=None, now=T0)
    return str(status["phase"])


def test_phase_rules_are_kubelets() -> None:
    waiting = ContainerView("main", "img", waiting=("ErrImagePull", "no"))
    running = ContainerView("main", "img", current=info(ContainerState.RUNNING), ready=True)
    crashed = info(ContainerState.EXITED, exit_code=1)
    done = info(ContainerState.EXITED, exit_code=0)
    backing_off = ContainerView("main", "img", current=crashed, waiting=("CrashLoopBackOff", "back-off"))

    assert phase("Always", waiting) == "Pending"
    assert phase("Never", running) == "Running"
    assert phase("Always", backing_off) == "Running"  # it restarts
    assert phase("OnFailure", backing_off) == "Running"
    assert phase("Never", ContainerView("main", "img", current=crashed)) == "Failed"
    assert phase("OnFailure", ContainerView("main", "img", current=done)) == "Succeeded"
    assert phase("Never", ContainerView("main", "img", current=done), running) == "Running"


def test_a_terminal_phase_sticks_and_unchanged_conditions_keep_their_time() -> None:
    pod: dict[str, Any] = {"spec": {"restartPolicy": "Always"}}
    view = ContainerView("main", "img", current=info(ContainerState.RUNNING), ready=True)
    first = pod_status(pod, [view], pod_ip="", host_ip="", start_time=T0, previous=None, now=T0)
    later = datetime(2030, 1, 2, tzinfo=UTC)
    again = pod_status(pod, [view], pod_ip="", host_ip="", start_time=T0, previous=first, now=later)
    assert again == first

    failed = {**first, "phase": "Failed"}
    assert pod_status(pod, [view], pod_ip="", host_ip="", start_time=T0, previous=failed)["phase"] == "Failed"


def test_volume_content_is_swapped_whole(tmp_path: Path) -> None:
    volume = tmp_path / "config"
    assert write_atomic(volume, {"a": (b"1", 0o644), "dir/b": (b"2", 0o600)})
    first_version = (volume / "..data").readlink()
    assert (volume / "a").readlink() == Path("..data/a")
    assert (volume / "dir" / "b").read_bytes() == b"2"
    assert ((volume / "dir" / "b").stat().st_mode & 0o777) == 0o600

    assert not write_atomic(volume, {"a": (b"1", 0o644), "dir/b": (b"2", 0o600)})  # unchanged: no swap
    assert write_atomic(volume, {"a": (b"new", 0o644)})

    assert (volume / "a").read_bytes() == b"new"
    assert not (volume / "dir").exists()  # a key that went away disappears
    assert not (volume / first_version).exists()  # the old version is cleaned up
    assert sorted(path.name for path in volume.iterdir() if not path.name.startswith("..")) == ["a"]
