"""A simulated OPC-UA boiler: real asyncua server, simple water physics.

Nodes as in ``examples/opcua-boiler.yaml`` (``opc.tcp://127.0.0.1:<port>/edgetwin/boiler``):
``ns=2;s=Boiler.Temperature`` and ``ns=2;s=Boiler.Pressure`` (read only), ``ns=2;s=Boiler.Setpoint``
(writable, 30..90 °C; other values are answered BadOutOfRange). Whatever writes the setpoint (the mapper,
from a desired value) steers the boiler: each tick the water temperature closes a fraction of the gap to the
setpoint, and the pressure follows the temperature. A subscribed mapper sees every change as it happens.
"""

from __future__ import annotations

from asyncua import ua

from edgetwin.demo.plant import Plant
from edgetwin.testing.opcua import OpcUaSimulator, Variable

SETPOINT_RANGE = (30.0, 90.0)
"""Degrees Celsius the setpoint accepts."""


def pressure_at(temperature: float) -> float:
    """Water pressure (bar) of the closed circuit at ``temperature`` (°C): 1.0 bar cold, rising when hot."""
    return round(1.0 + max(temperature - 20.0, 0.0) * 0.02, 3)


class Boiler(Plant):
    """Run with ``async with Boiler(port) as boiler:``; ``tick`` is the physics period in seconds."""

    def __init__(
        self,
        port: int | None = None,
        *,
        temperature: float = 20.0,
        setpoint: float = 60.0,
        tick: float = 0.5,
        approach: float = 0.2,
    ) -> None:
        low, high = SETPOINT_RANGE
        variables = [
            Variable("Temperature", ua.VariantType.Double, temperature, writable=False),
            Variable("Pressure", ua.VariantType.Double, pressure_at(temperature), writable=False),
            Variable("Setpoint", ua.VariantType.Double, setpoint, minimum=low, maximum=high),
        ]
        self.simulator = OpcUaSimulator(variables, port=port, object_name="Boiler", path="edgetwin/boiler")
        self._approach = approach
        super().__init__(tick)

    @property
    def url(self) -> str:
        """The boiler's OPC-UA endpoint (a Device's ``url``)."""
        return self.simulator.url

    async def serve(self) -> None:
        """Start the OPC-UA server."""
        await self.simulator.start()

    async def shutdown(self) -> None:
        """Stop the OPC-UA server."""
        await self.simulator.stop()

    async def temperature(self) -> float:
        """The water temperature, °C."""
        return float(await self.simulator.get("Temperature"))

    async def pressure(self) -> float:
        """The water pressure, bar."""
        return float(await self.simulator.get("Pressure"))

    async def setpoint(self) -> float:
        """The setpoint, °C."""
        return float(await self.simulator.get("Setpoint"))

    async def step(self) -> None:
        """Close a fraction of the gap to the setpoint; the pressure follows the temperature."""
        temperature, setpoint = await self.temperature(), await self.setpoint()
        gap = setpoint - temperature
        # Within a tenth of a degree counts as there: the reading settles, as a real one would.
        moved = setpoint if abs(gap) < 0.1 else round(temperature + gap * self._approach, 2)
        if moved != temperature:
            await self.simulator.set("Temperature", moved)
            await self.simulator.set("Pressure", pressure_at(moved))
