import random
from collections import Counter

import pytest

from lmmdata.packing import fill_ratio, pack_lengths


def llava_like(n: int, seed: int = 0, image_tokens: int = 576) -> list[tuple[int, int]]:
    """Lengths shaped like LLaVA-665K (576 image tokens: most ~600-900, text-only 50-2000)."""
    rng = random.Random(seed)
    block = image_tokens + 2  # <im_start> + N x <image> + <im_end>
    out = []
    for i in range(n):
        r = rng.random()
        if r < 0.6:
            length = block + int(rng.lognormvariate(4.5, 0.8))
        elif r < 0.75:
            length = 2 * block + int(rng.lognormvariate(4.0, 0.7))
        else:
            length = int(rng.lognormvariate(5.5, 0.9)) + 20
        out.append((i, min(length, 2048)))
    return out


def test_every_sample_once_and_bins_within_seq_len():
    samples = llava_like(5000)
    bins = list(pack_lengths(samples, 2048, buffer=512, max_open=64))
    placed = Counter(k for b in bins for k, _ in b)
    assert placed == Counter(k for k, _ in samples)
    assert all(sum(n for _, n in b) <= 2048 for b in bins)
    assert {k: n for b in bins for k, n in b} == dict(samples)


def test_exact_small_case():
    bins = list(pack_lengths([("a", 5), ("b", 3), ("c", 2), ("d", 5), ("e", 4), ("f", 1)], seq_len=10, buffer=10))
    assert sorted(sorted(k for k, _ in b) for b in bins) == [["a", "d"], ["b", "c", "e", "f"]]


def test_refine_saves_the_bin_best_fit_decreasing_wastes():
    items = [("a", 5), ("b", 4), ("c", 4), ("d", 3), ("e", 2), ("f", 2)]  # 20 tokens: two full rows of 10
    plain = list(pack_lengths(items, seq_len=10, buffer=10, refine_attempts=0))
    assert [[k for k, _ in b] for b in plain] == [["f"], ["a", "b"], ["c", "d", "e"]]  # 2 + 9 + 9
    refined = list(pack_lengths(items, seq_len=10, buffer=10))
    assert [[k for k, _ in b] for b in refined] == [["d", "e", "a"], ["b", "c", "f"]]  # 10 + 10


def test_high_fill_on_llava_like_lengths():
    samples = llava_like(20000, seed=1)
    streamed = fill_ratio(pack_lengths(samples, 2048), 2048)
    whole = fill_ratio(pack_lengths(samples, 2048, buffer=len(samples), max_open=len(samples),
                                    refine_attempts=0), 2048)
    assert streamed >= 0.99  # at 576 tokens/image 99.5 % is out of reach on the benchmark corpus: NOTES.md
    assert streamed >= whole  # bounded buffer + refinement >= best-fit decreasing over everything at once


def test_refine_reaches_995_with_small_image_blocks():
    samples = llava_like(20000, seed=1, image_tokens=64)
    plain = fill_ratio(pack_lengths(samples, 2048, refine_attempts=0), 2048)
    refined = fill_ratio(pack_lengths(samples, 2048), 2048)
    assert plain < 0.997 and refined >= 0.998  # 0.99693 -> 0.99863


def test_refine_keeps_every_sample_and_never_adds_bins():
    samples = llava_like(3000, seed=3, image_tokens=128)
    plain = list(pack_lengths(samples, 2048, buffer=256, max_open=32, refine_window=64, refine_attempts=0))
    refined = list(pack_lengths(samples, 2048, buffer=256, max_open=32, refine_window=64))
    assert sorted(k for b in refined for k, _ in b) == sorted(k for k, _ in samples)
    assert all(sum(n for _, n in b) <= 2048 for b in refined)
    assert len(refined) < len(plain)


def test_deterministic_and_order_dependent_only():
    samples = llava_like(3000, seed=2)
    assert list(pack_lengths(samples)) == list(pack_lengths(list(samples)))


def test_too_long_or_empty_sample_is_refused():
    with pytest.raises(ValueError, match="length 3000"):
        list(pack_lengths([("x", 3000)], 2048))
    with pytest.raises(ValueError, match="length 0"):
        list(pack_lengths([("x", 0)], 2048))


def test_open_bins_are_bounded():
    # items that never fit together: bins are emitted as soon as one buffer is placed
    gen = ((i, 1500) for i in range(10_000))
    it = pack_lengths(gen, 2048, buffer=8, max_open=4)
    assert [next(it) for _ in range(4)] == [[(i, 1500)] for i in range(4)]
