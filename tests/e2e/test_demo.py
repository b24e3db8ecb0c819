"""`make demo` runs `edgetwin demo`: it must work end to end and say what happened."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from edgetwin.testing.ble import missing
from edgetwin.testing.kubeapi import real_backend_available

EDGETWIN = Path(sys.executable).with_name("edgetwin")


async def run_demo(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        str(EDGETWIN),
        "demo",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return process.returncode or 0, output.decode(errors="replace")


@pytest.mark.parametrize(
    "kube",
    [
        "emulator",
        pytest.param(
            "real",
            marks=pytest.mark.skipif(not real_backend_available(), reason="no kube-apiserver + etcd here"),
        ),
    ],
)
async def test_demo_drives_the_thermostat_and_reports_back(kube: str, tmp_path: Path) -> None:
    code, output = await run_demo("--kube", kube, "--workdir", str(tmp_path))
    assert code == 0, output
    # The CRs are in the Kubernetes API, with the printer columns.
    assert "thermostat-01   edge-node-1" in output
    # cloudcore, a token, a join, and edgecore from the written config make a Ready edge node.
    assert "$ edgetwin gettoken --kubeconfig" in output
    assert "[3/3] wrote" in output
    assert re.search(r"edge-node-1\s+Ready\s+agent,edge", output), output
    assert "thermostat-01 and boiler-01 are in the twin" in output
    # The mappers learnt their devices through membership (the edge got them from cloudcore).
    assert "modbus mapper: learnt default/thermostat-01" in output
    assert "opcua mapper: learnt default/boiler-01" in output
    # kubectl patch device: the desired setpoint went to the edge's twin (delta), the register and back.
    assert "$ kubectl patch device thermostat-01 --type json" in output
    assert '"delta":{"setpoint":"24.5"}' in output
    assert "the mapper wrote holding register 0 = 245" in output
    assert "setpoint       24.5                  24.5" in output
    # ... and into the Device's status, reported and observed.
    assert "setpoint       24.5        24.5" in output
    assert "state: online, lastOnlineTime: 20" in output
    assert "heating = true" in output
    # A change on the device reaches the status.
    assert "status.twins[temperature].reported = 12.0" in output
    # The OPC-UA boiler: desired setpoint written to its node and read back into the status.
    assert "$ kubectl patch device boiler-01 --type json" in output
    assert "the mapper wrote ns=2;s=Boiler.Setpoint = 75" in output
    assert "reported back: setpoint = 75" in output
    # The BLE thermometer on the emulated BlueZ, or one line saying why that part was skipped.
    if missing() is None:
        assert "ble mapper: learnt default/ble-thermometer-01, found A4:C1:38:0D:7E:21" in output
        assert "twin/get: temperature = 21.5" in output
        assert "twin actual temperature = 23.4 at once" in output
        assert "reported back: led = ON" in output
    else:
        assert f"BLE part skipped: {missing()}" in output
    # A bad value is answered with the reason: on the result topic at the edge, in the status in the cloud.
    assert '"code":400,"reason":"property \'setpoint\': value \'warm\' is not a float"' in output
    assert (
        "status.conditions[Valid]: False, InvalidDesiredValue: "
        "spec.properties[name=setpoint].desired.value: 'warm' is not a number (FLOAT)"
    ) in output
    assert "the twin still expects setpoint = 24.5, the register holds 24.5" in output
    # The twin's state is in the SQLite file the demo kept.
    assert (tmp_path / "edgecore.db").exists()
