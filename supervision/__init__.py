"""What edgecore and cloudcore share: supervised modules (start in order, restart with backoff, health) and
the base of their KubeEdge-style configuration files (:mod:`supervision.config`).

A module is anything with ``name``, ``start()``, ``wait()`` and ``stop()``; :class:`Supervisor` runs a list of
them, restarts one that crashes (a fatal error stops the process loudly instead) and reports their status
for ``/healthz`` and metrics.
"""

from supervision.errors import ModuleFailedError, SupervisionError
from supervision.supervisor import Module, ModuleState, ModuleStatus, Supervisor

__all__ = ["Module", "ModuleFailedError", "ModuleState", "ModuleStatus", "SupervisionError", "Supervisor"]
