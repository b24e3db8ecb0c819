"""edgetwin's command line, configuration loading, logging and metrics."""

from device_models import EdgetwinError

__version__ = "0.1.0"

__all__ = ["EdgetwinError", "__version__"]
