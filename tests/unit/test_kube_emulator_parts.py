"""The emulator's building blocks: selectors, printer columns and merge patches."""

from __future__ import annotations

import datetime

import pytest

from edgetwin.testing.kubeapi.patches import merge_patch
from edgetwin.testing.kubeapi.selectors import FieldSelector, LabelSelector, SelectorError
from edgetwin.testing.kubeapi.tables import PrinterColumn, human_duration, json_path


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (-5, "<invalid>"),
        (-0.5, "0s"),
        (0, "0s"),
        (119, "119s"),
        (125, "2m5s"),
        (600, "10m"),
        (7205, "120m"),
        (3 * 3600 + 60, "3h1m"),
        (47 * 3600, "47h"),
        (49 * 3600, "2d1h"),
        (8 * 86400, "8d"),
        (3 * 365 * 86400 + 86400, "3y1d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_human_duration_matches_kubectl(seconds: float, shown: str) -> None:
    assert human_duration(seconds) == shown


def test_json_path_of_printer_columns() -> None:
    device = {"spec": {"properties": [{"name": "a", "desired": {"value": "1"}}, {"name": "b"}]}}
    assert json_path(device, ".spec.properties[0].desired.value") == ["1"]
    assert json_path(device, "{.spec.properties[*].name}") == ["a", "b"]
    assert json_path(device, '.spec.properties[?(@.name=="b")].name') == ["b"]
    assert json_path(device, ".spec.missing") == []
    assert json_path(device, ".spec.properties[7]") == []


def test_printer_column_cells() -> None:
    now = datetime.datetime(2024, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
    obj = {"metadata": {"creationTimestamp": "2024-01-01T11:55:00Z"}, "spec": {"count": 3}}
    assert PrinterColumn("Age", "date", ".metadata.creationTimestamp").cell(obj, now) == "5m"
    assert PrinterColumn("Count", "integer", ".spec.count").cell(obj, now) == 3
    assert PrinterColumn("Count", "string", ".spec.count").cell(obj, now) == "3"
    assert PrinterColumn("Node", "string", ".spec.nodeName").cell(obj, now) is None


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ("", {}, True),
        ("app=web", {"app": "web"}, True),
        ("app==web", {"app": "db"}, False),
        ("app!=web", {}, True),
        ("app in (web, db),tier", {"app": "db", "tier": "1"}, True),
        ("app in (web, db),tier", {"app": "db"}, False),
        ("app notin (web)", {"app": "db"}, True),
        ("!canary", {"canary": "yes"}, False),
        ("example.com/role=edge", {"example.com/role": "edge"}, True),
    ],
)
def test_label_selectors(selector: str, labels: dict[str, str], matches: bool) -> None:
    assert LabelSelector.parse(selector).matches(labels) is matches


def test_a_malformed_label_selector_is_an_error() -> None:
    with pytest.raises(SelectorError) as error:
        LabelSelector.parse("app in web")
    assert error.value.selector == "app in web"


def test_field_selectors_accept_only_indexed_fields() -> None:
    pod = {"metadata": {"name": "p", "namespace": "ns"}, "spec": {"nodeName": "edge-1"}}
    assert FieldSelector.parse("spec.nodeName=edge-1,metadata.name!=q", "Pod").matches(pod)
    assert not FieldSelector.parse("status.phase=Running", "Pod").matches(pod)
    with pytest.raises(SelectorError) as error:
        FieldSelector.parse("spec.nodeName=edge-1", "Device")
    assert error.value.reason == "field label not supported: spec.nodeName"


def test_merge_patch_follows_rfc_7386() -> None:
    target = {"a": "b", "c": {"d": "e", "f": "g"}, "list": [1, 2]}
    patch = {"a": "z", "c": {"f": None}, "list": [3], "new": {"x": 1}}
    assert merge_patch(target, patch) == {"a": "z", "c": {"d": "e"}, "list": [3], "new": {"x": 1}}
    assert target == {"a": "b", "c": {"d": "e", "f": "g"}, "list": [1, 2]}  # left untouched
