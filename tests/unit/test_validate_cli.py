"""`edgetwin validate FILE...`: one line per object, precise errors, exit 1 on any error."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from edgetwin.cli import app

MODEL = """\
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata:
  name: thermostat-model
spec:
  protocol: modbus
  properties:
    - {name: setpoint, type: FLOAT, accessMode: ReadWrite, minimum: "5", maximum: "35"}
"""

DEVICE = """\
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: thermostat
spec:
  deviceModelRef: {name: thermostat-model}
  protocol:
    protocolName: modbus
    configData: {ip: 127.0.0.1, port: "5502"}
  properties:
    - name: setpoint
      desired: {value: "21.5"}
      visitors:
        protocolName: modbus
        configData: {register: HoldingRegister, offset: 0, scale: 0.1}
"""


def run(*args: str | Path) -> tuple[int, list[str]]:
    result = CliRunner().invoke(app, ["validate", *map(str, args)])
    return result.exit_code, result.stdout.splitlines()


def test_valid_files_print_one_ok_line_per_object(tmp_path: Path) -> None:
    (tmp_path / "model.yaml").write_text(MODEL)
    (tmp_path / "devices.yaml").write_text(DEVICE)

    code, lines = run(tmp_path / "model.yaml", tmp_path / "devices.yaml")

    assert code == 0
    assert lines == [
        f"OK     {tmp_path / 'model.yaml'}: DeviceModel default/thermostat-model",
        f"OK     {tmp_path / 'devices.yaml'}: Device default/thermostat",
        "2 document(s): 2 valid, 0 invalid, 0 skipped; 0 error(s), 0 warning(s)",
    ]


def test_errors_give_file_object_path_value_and_reason(tmp_path: Path) -> None:
    (tmp_path / "model.yaml").write_text(MODEL)
    bad = DEVICE.replace("HoldingRegister", "HoldRegister").replace('"21.5"', '"40"')
    (tmp_path / "devices.yaml").write_text(bad)

    code, lines = run(tmp_path)

    assert code == 1
    assert lines == [
        f"ERROR  {tmp_path / 'devices.yaml'}: Device default/thermostat: "
        "spec.properties[name=setpoint].visitors.configData.register: 'HoldRegister' is not one of "
        "CoilRegister, "
        "DiscreteInputRegister, HoldingRegister, InputRegister",
        f"ERROR  {tmp_path / 'devices.yaml'}: Device default/thermostat: "
        "spec.properties[name=setpoint].desired.value: "
        "'40' is above the maximum 35",
        f"OK     {tmp_path / 'model.yaml'}: DeviceModel default/thermostat-model",
        "2 document(s): 1 valid, 1 invalid, 0 skipped; 2 error(s), 0 warning(s)",
    ]


def test_warnings_do_not_fail(tmp_path: Path) -> None:
    (tmp_path / "devices.yaml").write_text(DEVICE)

    code, lines = run(tmp_path / "devices.yaml")

    assert code == 0
    assert lines[0] == f"OK     {tmp_path / 'devices.yaml'}: Device default/thermostat"
    assert lines[1].startswith(
        f"WARN   {tmp_path / 'devices.yaml'}: Device default/thermostat: spec.deviceModelRef.name"
    )


def test_other_kinds_fail_unless_skipped(tmp_path: Path) -> None:
    path = tmp_path / "all.yaml"
    path.write_text(MODEL + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\n")

    failing, _ = run(path)
    skipping = CliRunner().invoke(app, ["validate", "--skip-other-kinds", "--quiet", str(path)])

    assert failing == 1
    assert skipping.exit_code == 0
    assert skipping.stdout.splitlines() == [
        f"WARN   {path}: ConfigMap default/settings: kind: 'ConfigMap' is not Device or DeviceModel "
        "(edgetwin reads "
        "devices.kubeedge.io objects only)",
        "2 document(s): 1 valid, 0 invalid, 1 skipped; 0 error(s), 1 warning(s)",
    ]


def test_missing_file_and_empty_input_fail(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("# nothing\n")

    missing_code, missing_lines = run(tmp_path / "absent.yaml")
    empty_code, empty_lines = run(tmp_path / "empty.yaml")

    assert missing_code == 1
    assert missing_lines[0] == f"ERROR  {tmp_path / 'absent.yaml'}: does not exist"
    assert (empty_code, empty_lines) == (1, ["no Device or DeviceModel found"])


def test_help_explains_what_is_checked() -> None:
    result = CliRunner().invoke(app, ["validate", "--help"])
    # The help is wrapped to the terminal's width.
    text = " ".join(result.stdout.split())

    assert result.exit_code == 0
    assert "Check Device and DeviceModel files" in text
    assert "desired values have the model's type and lie within minimum..maximum" in text
    assert "--skip-other-kinds" in text
    assert "Exits with 1 if there is any error." in text
