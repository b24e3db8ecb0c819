"""Test-suite wiring: each component's fixtures live in a plugin module under tests/fixtures."""

pytest_plugins = [
    "tests.fixtures.hygiene",
    "tests.fixtures.mqtt",
    "tests.fixtures.modbus",
    "tests.fixtures.kube",
    "tests.fixtures.opcua",
    "tests.fixtures.containerd",
    "tests.fixtures.ble",
]
