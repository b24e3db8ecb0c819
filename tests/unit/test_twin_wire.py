"""The twin's hot-path wire code: replies written without the models are byte for byte what the models write,
and requests parsed the fast way come out as the models read them."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from device_models import (
    MsgTwin,
    TwinDelta,
    TwinDoc,
    TwinDocument,
    TwinUpdateRequest,
    TwinUpdateResult,
    TwinValue,
    TwinVersion,
    TypeMetadata,
    ValueMetadata,
)
from devicetwin import TwinRequestError
from devicetwin.wire import decode_request, encode_delta, encode_document, encode_update_result

# Any text, control characters and non-ASCII included: event ids come from apps.
texts = st.text(max_size=12)
timestamps = st.integers(min_value=0, max_value=2**53)
values = st.builds(
    TwinValue,
    value=st.none() | texts,
    metadata=st.none() | st.builds(ValueMetadata, timestamp=st.none() | timestamps),
)
versions = st.none() | st.builds(TwinVersion, cloud=st.integers(0, 99), edge=st.integers(0, 99))
twins = st.builds(
    MsgTwin,
    expected=st.none() | values,
    actual=st.none() | values,
    optional=st.none() | st.booleans(),
    metadata=st.none() | st.builds(TypeMetadata, type=st.none() | texts),
    expected_version=versions,
    actual_version=versions,
)
names = st.text(min_size=1, max_size=8)


@given(texts, timestamps, st.dictionaries(names, st.none() | twins, max_size=3))
def test_update_result_as_the_model_writes_it(event_id: str, timestamp: int, changed: Any) -> None:
    expected = TwinUpdateResult(event_id=event_id, timestamp=timestamp, twin=changed).to_json()
    assert encode_update_result(event_id, timestamp, changed) == expected


@given(
    texts,
    timestamps,
    st.dictionaries(names, st.builds(TwinDoc, last=st.none() | twins, current=st.none() | twins), max_size=3),
)
def test_document_as_the_model_writes_it(event_id: str, timestamp: int, docs: dict[str, TwinDoc]) -> None:
    expected = TwinDocument(event_id=event_id, timestamp=timestamp, twin=docs).to_json()
    assert encode_document(event_id, timestamp, docs) == expected


@given(
    texts, timestamps, st.dictionaries(names, twins, max_size=3), st.dictionaries(names, texts, max_size=3)
)
def test_delta_as_the_model_writes_it(
    event_id: str, timestamp: int, live: dict[str, MsgTwin], delta: dict[str, str]
) -> None:
    expected = TwinDelta(event_id=event_id, timestamp=timestamp, twin=live, delta=delta).to_json()
    assert encode_delta(event_id, timestamp, live, delta) == expected


def test_versions_never_reach_apps() -> None:
    twin = MsgTwin(actual=TwinValue(value="1"), expected_version=TwinVersion(edge=1))
    written = encode_update_result("e", 1, {"p": twin}) + encode_document(
        "e", 1, {"p": TwinDoc(current=twin)}
    )
    assert b"version" not in written


def test_a_lone_surrogate_in_an_event_id_is_written_as_its_json_escape() -> None:
    event_id = json.loads('"\\ud800"')  # JSON text may carry one; it has no UTF-8 form
    assert json.loads(encode_update_result(event_id, 1, {}))["event_id"] == event_id


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
value_bodies = st.fixed_dictionaries({}, optional={"value": json_values, "metadata": json_values})
twin_bodies = st.fixed_dictionaries(
    {}, optional={"expected": value_bodies | json_values, "actual": value_bodies, "optional": json_values}
)
requests = st.fixed_dictionaries(
    {},
    optional={
        "event_id": texts | json_values,
        "timestamp": timestamps | json_values,
        "twin": st.dictionaries(names, st.none() | twin_bodies, max_size=3) | json_values,
    },
)


@given(requests | json_values)
def test_requests_read_as_the_model_reads_them(body: Any) -> None:
    payload = json.dumps(body).encode()
    try:
        reference: TwinUpdateRequest | None = TwinUpdateRequest.model_validate(json.loads(payload))
    except ValueError:  # pydantic's ValidationError, or not an object at all
        reference = None
    if not isinstance(body, dict):
        reference = None
    try:
        decoded: TwinUpdateRequest | None = decode_request(payload, TwinUpdateRequest)
    except TwinRequestError:
        decoded = None
    assert decoded == reference
