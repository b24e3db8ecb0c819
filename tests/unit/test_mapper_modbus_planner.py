"""Read coalescing: which properties share a Modbus request."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from mappers.modbus.planner import Block, Span, plan_reads


def _spans(*pairs: tuple[int, int]) -> list[Span]:
    return [Span(f"p{i}", start, count) for i, (start, count) in enumerate(pairs)]


def test_contiguous_properties_share_one_request() -> None:
    spans = [Span(f"p{i}", i, 1) for i in range(50)]
    assert plan_reads(spans, max_count=125, max_gap=10) == [Block(0, 50, tuple(spans))]


def test_gap_bridged_up_to_max_gap_only() -> None:
    assert len(plan_reads(_spans((0, 2), (12, 2)), max_count=125, max_gap=10)) == 1
    blocks = plan_reads(_spans((0, 2), (13, 2)), max_count=125, max_gap=10)
    assert [(b.start, b.count) for b in blocks] == [(0, 2), (13, 2)]


def test_request_size_limit_splits_blocks() -> None:
    spans = [Span(f"p{i}", i, 1) for i in range(130)]
    blocks = plan_reads(spans, max_count=125, max_gap=10)
    assert [(b.start, b.count) for b in blocks] == [(0, 125), (125, 5)]


def test_overlapping_and_unsorted_spans() -> None:
    spans = _spans((10, 2), (0, 4), (11, 1), (2, 2))
    blocks = plan_reads(spans, max_count=125, max_gap=0)
    assert [(b.start, b.count) for b in blocks] == [(0, 4), (10, 2)]
    assert {s.key for s in blocks[1].spans} == {"p0", "p2"}


def test_slice_of_locates_a_property_in_the_response() -> None:
    (block,) = plan_reads(_spans((3, 2), (8, 1)), max_count=125, max_gap=10)
    assert block.slice_of(block.spans[1]) == slice(5, 6)
    assert list(range(3, 9))[block.slice_of(block.spans[0])] == [3, 4]


def test_no_spans_no_requests() -> None:
    assert plan_reads([], max_count=125, max_gap=10) == []


span_lists = st.lists(
    st.tuples(st.integers(0, 3000), st.integers(1, 125)).map(lambda t: (t[0], t[1])),
    max_size=60,
).map(lambda pairs: _spans(*pairs))


@given(spans=span_lists, max_gap=st.integers(0, 40), max_count=st.integers(125, 200))
def test_plan_covers_every_span_once_within_limits(spans: list[Span], max_gap: int, max_count: int) -> None:
    blocks = plan_reads(spans, max_count=max_count, max_gap=max_gap)
    placed = [span for block in blocks for span in block.spans]
    assert sorted(placed, key=lambda s: s.key) == sorted(spans, key=lambda s: s.key)
    for block in blocks:
        assert block.count <= max_count
        for span in block.spans:
            assert block.start <= span.start
            assert span.end <= block.end
        # A block is no wider than its spans: it starts at one and ends at one.
        assert block.start == min(s.start for s in block.spans)
        assert block.end == max(s.end for s in block.spans)
    for before, after in itertools.pairwise(blocks):
        assert before.start <= after.start
        # The next block exists for a reason: its first span could not join the previous block.
        first = after.spans[0]
        assert first.start - before.end > max_gap or max(before.end, first.end) - before.start > max_count


@given(
    starts=st.lists(st.integers(0, 1000), min_size=1, max_size=40, unique=True),
    max_gap=st.integers(0, 20),
)
def test_single_registers_need_one_request_per_cluster(starts: list[int], max_gap: int) -> None:
    spans = [Span(str(start), start, 1) for start in starts]
    ordered = sorted(starts)
    # A new request is due exactly where the gap to the previous register exceeds max_gap, or the request
    # would outgrow 125 registers: count those places independently of the planner.
    expected, block_start = 1, ordered[0]
    for previous, current in itertools.pairwise(ordered):
        if current - previous - 1 > max_gap or current + 1 - block_start > 125:
            expected += 1
            block_start = current
    assert len(plan_reads(spans, max_count=125, max_gap=max_gap)) == expected
