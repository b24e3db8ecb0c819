"""Read coalescing: the properties of one device that sit in nearby addresses of one table are read together.

The rule (per table, spans sorted by start address): a span joins the current block when

* the block, stretched to cover it, still fits one request (125 registers / 2000 bits, the Modbus limits), and
* the gap between the block's end and the span's start is at most ``max_gap`` units.

Bridging a gap of ``g`` registers costs ``2g`` bytes in the response; a separate request costs a whole round
trip plus about 20 bytes of framing (RTU: 8-byte request, 5-byte response overhead and two 3.5-character
silences; TCP: two 7-byte MBAP headers plus TCP/IP headers). So by default gaps of up to 10 registers, or 160
bits (the same 20 bytes), are bridged; anything wider costs more to read than a new request.

A device that refuses a bridged address (exception 2, illegal data address) makes the driver split that block
into one request per property for good, so a sparse register map still reads correctly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_REGISTER_GAP = 10
DEFAULT_BIT_GAP = 160


@dataclass(frozen=True, slots=True)
class Span:
    """The addresses one property occupies: ``count`` units from ``start``."""

    key: str
    start: int
    count: int

    @property
    def end(self) -> int:
        """One past the last address."""
        return self.start + self.count


@dataclass(frozen=True, slots=True)
class Block:
    """One read request: ``count`` units from ``start``, covering ``spans``."""

    start: int
    count: int
    spans: tuple[Span, ...]

    @property
    def end(self) -> int:
        """One past the last address."""
        return self.start + self.count

    def slice_of(self, span: Span) -> slice:
        """Where ``span``'s units sit in this block's response."""
        return slice(span.start - self.start, span.end - self.start)


def plan_reads(spans: Iterable[Span], *, max_count: int, max_gap: int) -> list[Block]:
    """Group ``spans`` of one table into as few read requests as the rule above allows, in address order.

    Every span lands in exactly one block; a span wider than ``max_count`` is a configuration error the codec
    rejects before planning, so it is not checked here.
    """
    blocks: list[Block] = []
    current: list[Span] = []
    start = end = 0
    for span in sorted(spans, key=lambda s: (s.start, s.end, s.key)):
        if current and span.start - end <= max_gap and max(end, span.end) - start <= max_count:
            current.append(span)
            end = max(end, span.end)
            continue
        if current:
            blocks.append(Block(start, end - start, tuple(current)))
        current, start, end = [span], span.start, span.end
    if current:
        blocks.append(Block(start, end - start, tuple(current)))
    return blocks
