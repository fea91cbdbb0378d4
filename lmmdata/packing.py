"""Packing: a pure function from sample lengths to bins of at most `seq_len` tokens.

`pack_lengths` is streaming best-fit decreasing followed by a bounded local
search. Samples are read into a buffer of `buffer` items, each full buffer is
sorted longest first and placed by best fit (the open bin with the least room
that still fits, else a new bin). After each buffer, bins that no sample seen
so far could still fit into are emitted, and of the rest at most `max_open`
stay open (the fullest are emitted first); the others carry over and keep
filling from the next buffer.

Emitted bins then pass through `refine` in windows of `refine_window` bins: it
tries to empty the emptiest bins by moving their samples into the others' free
room, swapping one or two samples of a bin for one or two loose ones whenever
that makes the bin fuller (Falkenauer's dominance moves). Best-fit decreasing
leaves its waste in gaps no remaining sample fits; the swaps gather those gaps
into whole rows that can be dropped (LLaVA-665K-shaped corpus, 64 image tokens:
99.37 % -> 99.7 % real tokens; 256 tokens: 97.2 % -> 98.5 %).

Guarantees: every sample lands in exactly one bin, in one piece; no bin holds
more than `seq_len` tokens; memory is O(buffer + max_open + refine_window)
whatever the input size; the result depends only on the input order
(deterministic). A sample longer than `seq_len` is a caller error (filter or
truncate before packing).
"""

from __future__ import annotations

import bisect
import itertools
from typing import Hashable, Iterable, Iterator

MAX_PAIR_ITEMS = 24  # bins with more samples skip the two-for-one swaps (quadratic; tiny samples fill gaps anyway)


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
                 max_open: int = 256, refine_window: int = 512,
                 refine_attempts: int = 32) -> Iterator[list[tuple[Hashable, int]]]:
    """Yield bins (lists of (key, length)) from a stream of (key, length).

    `refine_attempts=0` gives plain streaming best-fit decreasing.
    """
    if refine_window <= 0 or refine_attempts < 0:
        raise ValueError("refine_window must be positive and refine_attempts not negative")
    window: list[list] = []
    for b in _best_fit_stream(samples, seq_len, buffer, max_open):
        window.append(b)
        if len(window) >= refine_window:
            yield from refine(window, seq_len, refine_attempts)
            window = []
    if window:
        yield from refine(window, seq_len, refine_attempts)


def _best_fit_stream(samples: Iterable[tuple[Hashable, int]], seq_len: int, buffer: int,
                     max_open: int) -> Iterator[list[tuple[Hashable, int]]]:
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


def refine(bins: list[list[tuple[Hashable, int]]], seq_len: int, attempts: int = 32) -> list[list]:
    """The same samples in as few bins as a bounded local search finds (never more bins).

    Tries to dissolve the emptiest bin (then the two, then three emptiest): its
    samples become a loose pool, other bins swap samples with the pool while that
    makes them fuller, and what is left of the pool is re-packed; the trial is
    kept when it needs fewer bins. Gives up after `attempts` trials in a row fail.
    """
    bins = sorted((list(b) for b in bins), key=_load)  # stable: ties keep input order
    total = sum(map(_load, bins))  # the same samples throughout: a bin can be saved only while this fits in one less
    start = fails = 0
    while fails < attempts and start < len(bins) and total <= (len(bins) - 1) * seq_len:
        for k in (1, 2, 3):
            if start + k <= len(bins):
                trial = _dissolve(bins, start, k, seq_len)
                if trial is not None:
                    bins, start = sorted(trial, key=_load), 0
                    break
        else:
            fails, start = fails + 1, start + 1
    return bins


def _load(b: list) -> int:
    return sum(n for _, n in b)


def _dissolve(bins: list[list], start: int, k: int, seq_len: int) -> list[list] | None:
    """Bins without bins[start:start+k] but with their samples, in fewer bins; None if not found."""
    pool = _Pool([item for b in bins[start:start + k] for item in b])
    rest = [list(b) for b in bins[:start] + bins[start + k:]]
    for _ in range(3):
        moved = False
        for b in rest:
            if not pool.lens:
                break
            moved |= _fill_from(b, pool, seq_len)
        if not pool.lens or not moved:
            break
    n = max(1, len(pool.items))  # all left-over samples in one buffer: best-fit decreasing over them
    extra = list(_best_fit_stream(pool.items, seq_len, n, n))
    return rest + extra if len(extra) < k else None


class _Pool:
    """Loose samples kept sorted by length, for best-fit lookups by bisection."""

    def __init__(self, items: list[tuple[Hashable, int]]):
        self.items = sorted(items, key=lambda kv: kv[1])
        self.lens = [n for _, n in self.items]

    def largest_upto(self, limit: int) -> int:
        """Index of the longest sample of at most `limit` tokens, or -1."""
        return bisect.bisect_right(self.lens, limit) - 1

    def best_pair_upto(self, limit: int) -> tuple[int, int, int] | None:
        """(total, i, j): the two samples with the largest total of at most `limit`."""
        lo, hi, best = 0, self.largest_upto(limit), None
        while lo < hi:
            total = self.lens[lo] + self.lens[hi]
            if total > limit:
                hi -= 1
                continue
            if best is None or total > best[0]:
                best = (total, lo, hi)
            if total == limit:
                break
            lo += 1
        return best

    def take(self, idx: list[int]) -> list[tuple[Hashable, int]]:
        out = [self.items[i] for i in idx]
        for i in sorted(idx, reverse=True):
            del self.items[i], self.lens[i]
        return out

    def put(self, item: tuple[Hashable, int]) -> None:
        i = bisect.bisect_right(self.lens, item[1])
        self.items.insert(i, item)
        self.lens.insert(i, item[1])


def _fill_from(b: list, pool: _Pool, seq_len: int) -> bool:
    """Make bin `b` fuller by the best swap with the pool, repeatedly; True if it changed."""
    changed = False
    while pool.lens:
        room = seq_len - _load(b)
        if room == 0:
            break
        best: tuple[int, tuple, list] | None = None  # (gain, bin positions out, pool indices in)

        def consider(gain: int, out: tuple, into: list) -> None:
            nonlocal best
            if gain > 0 and (best is None or gain > best[0]):
                best = (gain, out, into)

        i = pool.largest_upto(room)
        if i >= 0:
            consider(pool.lens[i], (), [i])
        pair = pool.best_pair_upto(room)
        if pair:
            consider(pair[0], (), [pair[1], pair[2]])
        for p, (_, n) in enumerate(b):
            i = pool.largest_upto(n + room)
            if i >= 0:
                consider(pool.lens[i] - n, (p,), [i])
            pair = pool.best_pair_upto(n + room)
            if pair:
                consider(pair[0] - n, (p,), [pair[1], pair[2]])
        pairs = itertools.combinations(enumerate(b), 2) if len(b) <= MAX_PAIR_ITEMS else ()
        for (p, (_, n)), (q, (_, m)) in pairs:
            i = pool.largest_upto(n + m + room)
            if i >= 0:
                consider(pool.lens[i] - n - m, (p, q), [i])
        if best is None:
            break
        _, out, into = best
        removed = [b[p] for p in out]
        for p in sorted(out, reverse=True):
            del b[p]
        b.extend(pool.take(into))
        for item in removed:
            pool.put(item)
        changed = True
    return changed


def fill_ratio(bins: Iterable[list[tuple[Hashable, int]]], seq_len: int) -> float:
    """Real tokens / (bins x seq_len): the share of a padded batch that is not padding."""
    total = n = 0
    for b in bins:
        total += sum(length for _, length in b)
        n += 1
    return total / (n * seq_len) if n else 1.0
