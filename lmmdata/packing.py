"""Packing: a pure function from sample lengths to bins of at most `seq_len` tokens.

`pack_lengths` is streaming best-fit decreasing: samples are read into a buffer
of `buffer` items, each full buffer is sorted longest first and placed by best
fit (the open bin with the least room that still fits, else a new bin). After
each buffer, bins that no sample seen so far could still fit into are emitted,
and of the rest at most `max_open` stay open (the fullest are emitted first);
the others carry over and keep filling from the next buffer.

Guarantees: every sample lands in exactly one bin, in one piece; no bin holds
more than `seq_len` tokens; memory is O(buffer + max_open) whatever the input
size (at most buffer + max_open bins are open); the result depends only on the
input order (deterministic). A sample longer than `seq_len` is a caller error
(filter or truncate before packing).
"""

from __future__ import annotations

import bisect
from typing import Hashable, Iterable, Iterator


class _Bins:
    """Open bins kept sorted by free room, for best-fit lookups by bisection."""

    def __init__(self, seq_len: int):
        self.seq_len = seq_len
        self.free: list[int] = []  # sorted ascending
        self.bins: list[list] = []  # parallel to free

    def place(self, key: Hashable, length: int) -> bool:
        i = bisect.bisect_left(self.free, length)
        if i == len(self.free):
            return False
        free, items = self.free.pop(i), self.bins.pop(i)
        items.append((key, length))
        self._insert(free - length, items)
        return True

    def open(self, key: Hashable, length: int) -> None:
        self._insert(self.seq_len - length, [(key, length)])

    def _insert(self, free: int, items: list) -> None:
        j = bisect.bisect_right(self.free, free)  # equal room: older bins first
        self.free.insert(j, free)
        self.bins.insert(j, items)

    def pop_fullest(self) -> list:
        self.free.pop(0)
        return self.bins.pop(0)

    def __len__(self) -> int:
        return len(self.free)


def pack_lengths(samples: Iterable[tuple[Hashable, int]], seq_len: int = 2048, buffer: int = 4096,
                 max_open: int = 256) -> Iterator[list[tuple[Hashable, int]]]:
    """Yield bins (lists of (key, length)) from a stream of (key, length)."""
    if seq_len <= 0 or buffer <= 0 or max_open <= 0:
        raise ValueError("seq_len, buffer and max_open must be positive")
    bins = _Bins(seq_len)
    pending: list[tuple[Hashable, int]] = []
    shortest = seq_len

    def drain() -> Iterator[list]:
        nonlocal shortest
        pending.sort(key=lambda kv: -kv[1])  # stable: ties keep input order
        for key, length in pending:
            if length > seq_len or length <= 0:
                raise ValueError(f"sample {key!r} has length {length}; packable lengths are 1..{seq_len}")
            shortest = min(shortest, length)
            if not bins.place(key, length):
                bins.open(key, length)
        pending.clear()
        while len(bins) and bins.free[0] < shortest:  # nothing seen so far fits: done
            yield bins.pop_fullest()
        while len(bins) > max_open:
            yield bins.pop_fullest()

    for item in samples:
        pending.append(item)
        if len(pending) >= buffer:
            yield from drain()
    yield from drain()
    while len(bins):
        yield bins.pop_fullest()


def fill_ratio(bins: Iterable[list[tuple[Hashable, int]]], seq_len: int) -> float:
    """Real tokens / (bins x seq_len): the share of a padded batch that is not padding."""
    total = n = 0
    for b in bins:
        total += sum(length for _, length in b)
        n += 1
    return total / (n * seq_len) if n else 1.0
