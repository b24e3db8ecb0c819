"""A simulated Modbus TCP thermostat: real pymodbus server, simple room physics.

``python -m edgetwin.demo.thermostat [PORT]`` serves one on ``127.0.0.1:PORT`` (default 5502, the example's)
until interrupted, for the README's walk-through.

Registers as in ``examples/modbus-tcp-thermostat.yaml``: input register 0 = room temperature, holding
register 0 = setpoint (both tenths of a degree), coil 0 = heating relay. Whatever writes the setpoint
(the mapper, from a desired value) steers the room: the thermostat switches the relay and the
temperature follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

from edgetwin.demo.plant import Plant
from edgetwin.testing.modbus import ModbusTcpSimulator

SLAVE = 1
HYSTERESIS = 2  # tenths of a degree
HEAT_STEP = 3  # tenths of a degree per tick while heating
COOL_STEP = 1  # tenths of a degree per tick while the relay is off
PRINT_EVERY = 2.0  # seconds between the register lines ``python -m edgetwin.demo.thermostat`` prints


class Thermostat(Plant):
    """Run with ``async with Thermostat(port) as device:``; ``tick`` is the physics period in seconds."""

    def __init__(self, port: int, *, temperature: float = 19.0, setpoint: float = 21.5, tick: float = 0.2):
        self.simulator = ModbusTcpSimulator((SLAVE,), port=port)
        self._initial = (round(temperature * 10), round(setpoint * 10))
        super().__init__(tick)

    async def serve(self) -> None:
        """Start the Modbus server with the initial temperature and setpoint."""
        await self.simulator.start()
        temperature, setpoint = self._initial
        await self.simulator.set_inputs(SLAVE, 0, [temperature])
        await self.simulator.set_holding(SLAVE, 0, [setpoint])

    async def shutdown(self) -> None:
        """Stop the Modbus server."""
        await self.simulator.stop()

    async def setpoint(self) -> float:
        """The setpoint register, in degrees."""
        return (await self.simulator.get_holding(SLAVE, 0))[0] / 10

    async def temperature(self) -> float:
        """The temperature register, in degrees."""
        return (await self.simulator.get_inputs(SLAVE, 0))[0] / 10

    async def set_temperature(self, value: float) -> None:
        """Set the temperature register, as the room itself would (e.g. a window opened)."""
        await self.simulator.set_inputs(SLAVE, 0, [round(value * 10)])

    async def step(self) -> None:
        """Switch the relay around the setpoint and move the temperature one step."""
        temperature = (await self.simulator.get_inputs(SLAVE, 0))[0]
        setpoint = (await self.simulator.get_holding(SLAVE, 0))[0]
        heating = (await self.simulator.get_coils(SLAVE, 0))[0]
        if temperature < setpoint - HYSTERESIS:
            heating = True
        elif temperature > setpoint + HYSTERESIS:
            heating = False
        temperature += HEAT_STEP if heating else -COOL_STEP
        await self.simulator.set_coils(SLAVE, 0, [heating])
        await self.simulator.set_inputs(SLAVE, 0, [max(temperature, 0)])


async def serve_forever(port: int) -> None:
    """Run a thermostat on ``127.0.0.1:port``, printing its registers, until cancelled."""
    async with Thermostat(port) as thermostat:
        print(f"simulated thermostat on 127.0.0.1:{port}; Ctrl-C stops it", flush=True)
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await asyncio.sleep(PRINT_EVERY)
                temperature, setpoint = await thermostat.temperature(), await thermostat.setpoint()
                print(f"temperature {temperature:.1f} °C  setpoint {setpoint:.1f} °C", flush=True)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever(int(sys.argv[1]) if len(sys.argv) > 1 else 5502))
