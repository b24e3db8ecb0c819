"""coalesce(): a burst of writes with each row put once commits to the same database as the burst itself."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from device_models import MsgAttr, MsgTwin, TwinValue, TwinVersion
from devicetwin import DeviceRecord, DeviceSnapshot, TwinStore
from devicetwin.store import DeleteAttr, DeleteDevice, PutAttr, PutDevice, PutTwin, WriteOp, coalesce

DEVICES = ("ns/a", "ns/b")
NAMES = ("p", "q")
ops = st.one_of(
    st.builds(PutDevice, st.builds(DeviceRecord, st.sampled_from(DEVICES), st.sampled_from(("x", "y")))),
    st.builds(DeleteDevice, st.sampled_from(DEVICES)),
    st.builds(
        PutTwin,
        st.sampled_from(DEVICES),
        st.sampled_from(NAMES),
        st.builds(
            MsgTwin,
            actual=st.builds(TwinValue, value=st.sampled_from(("1", "2", "3"))),
            actual_version=st.builds(TwinVersion, edge=st.integers(0, 5)),
        ),
    ),
    st.builds(
        PutAttr,
        st.sampled_from(DEVICES),
        st.sampled_from(NAMES),
        st.builds(MsgAttr, value=st.sampled_from(("s", "t"))),
    ),
    st.builds(DeleteAttr, st.sampled_from(DEVICES), st.sampled_from(NAMES)),
)


async def committed(directory: Path, writes: list[WriteOp]) -> list[DeviceSnapshot]:
    async with await TwinStore.open(directory / "edgecore.db") as store:
        await store.write(writes)
        return await store.load()


@settings(max_examples=25, deadline=None)
@given(st.lists(ops, max_size=12))
def test_coalesced_writes_leave_the_same_database(writes: list[WriteOp]) -> None:
    with tempfile.TemporaryDirectory() as as_given, tempfile.TemporaryDirectory() as as_coalesced:
        expected = asyncio.run(committed(Path(as_given), writes))
        assert asyncio.run(committed(Path(as_coalesced), coalesce(writes))) == expected


def test_a_burst_of_one_property_is_one_row_write() -> None:
    burst = [PutTwin("ns/a", "p", MsgTwin(actual=TwinValue(value=str(i)))) for i in range(50)]
    assert coalesce(burst) == [burst[-1]]
