"""``edgetwin demo``: the platform end to end on one machine with simulated devices, step by step."""

from edgetwin.demo.boiler import Boiler
from edgetwin.demo.scenario import DemoError, run_demo
from edgetwin.demo.thermostat import Thermostat

__all__ = ["Boiler", "DemoError", "Thermostat", "run_demo"]
