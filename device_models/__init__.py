"""Models of KubeEdge's devices.kubeedge.io Device / DeviceModel and of the twin wire messages.

Pure data: nothing in this package does I/O beyond parsing text it is given.
"""

from device_models.errors import EdgetwinError

__all__ = ["EdgetwinError"]
