"""Helpers shared by the test suite, the demo and the benchmarks: real servers on free ports, waiting.

Nothing here fakes the thing under test: each helper starts or drives a real component (mosquitto,
pymodbus, asyncua, kube-apiserver or the kmock-based emulator where no kube-apiserver exists).
"""

from edgetwin.testing.ports import free_port
from edgetwin.testing.waiting import WaitTimeout, wait_for, wait_for_sync

__all__ = ["WaitTimeout", "free_port", "wait_for", "wait_for_sync"]
