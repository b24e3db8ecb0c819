"""The MetaServer's label and field selectors, read as the Kubernetes API server reads them."""

from __future__ import annotations

from typing import Any

import pytest

from edgecore import MetaSelectorError, Selector, revision_token

POD: dict[str, Any] = {
    "metadata": {
        "name": "web",
        "namespace": "default",
        "labels": {"app": "web", "app.kubernetes.io/tier": "front"},
    },
    "spec": {"nodeName": "edge-1", "hostNetwork": True},
    "status": {"phase": "Running"},
}


@pytest.mark.parametrize(
    ("labels", "fields", "expected"),
    [
        ("", "", True),
        ("app=web", "", True),
        ("app==web", "", True),
        ("app=api", "", False),
        ("app!=api", "", True),
        ("app", "", True),
        ("!app", "", False),
        ("!missing", "", True),
        ("missing!=x", "", True),  # a missing label is "not x"
        ("app in (api, web)", "", True),
        ("app notin (api,web)", "", False),
        ("app.kubernetes.io/tier=front,app=web", "", True),
        ("app.kubernetes.io/tier=front,app=api", "", False),
        ("", "spec.nodeName=edge-1", True),
        ("", "spec.nodeName=edge-2", False),
        ("", "metadata.name=web,metadata.namespace=default", True),
        ("", "metadata.namespace!=default", False),
        ("", "status.phase==Running", True),
        ("", "spec.hostNetwork=true", True),
        ("", "spec.missing=", True),  # a missing field reads as ""
        ("app=web", "spec.nodeName=edge-2", False),
    ],
)
def test_selector_matches(labels: str, fields: str, expected: bool) -> None:
    assert Selector(labels, fields).matches(POD) is expected


@pytest.mark.parametrize(
    ("labels", "fields"), [("app > 3", ""), ("!app=web", ""), ("", "spec.nodeName"), ("a=b c", "")]
)
def test_unreadable_selectors_are_refused(labels: str, fields: str) -> None:
    with pytest.raises(MetaSelectorError) as caught:
        Selector(labels, fields)
    assert caught.value.selector in (labels, fields)


def test_list_versions_cannot_be_mistaken_for_the_clouds() -> None:
    assert revision_token(42) == "s42"
    assert not revision_token(42).isdigit()
