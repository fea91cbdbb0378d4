"""`mix-text`: mix text-only instructions into multimodal data against forgetting.

Guarantees: the share of added text records in the output is `ratio` to within
one record; text records are sampled without replacement (unless
`allow_repeat`); the output order is a uniformly random permutation; the same
inputs and seed give byte-identical output. Memory stays bounded: records are
spilled to random temp buckets (Rao-Sandelius shuffle) and each bucket is
shuffled on its own, so only one bucket is held at a time.
"""

from __future__ import annotations

import math
import os
import random
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .config import ConfigError
from .jsonio import RecordWriter, check_record_files, dumps
from .progress import track
from .records import iter_valid
from .stats import Stats
from .textsets import to_llava


@dataclass
class MixConfig:
    """Options of `lmmdata mix-text`."""

    mm: str
    text: list[str]
    out: str
    ratio: float = 0.2
    seed: int = 0
    allow_repeat: bool = False
    source: str = "text"  # value of the "source" key on added records; "file" = the text file's name
    rejects: str | None = None
    bucket_bytes: int = 256 << 20  # records held in memory at once while shuffling


def _check(cfg: MixConfig) -> None:
    if not 0 <= cfg.ratio < 1:
        raise ConfigError(f"--ratio must be in [0, 1), got {cfg.ratio}: it is the fraction of text-only records in the output")
    if not cfg.text:
        raise ConfigError("give at least one text-only instruction file")
    check_record_files([cfg.mm, *cfg.text], cfg.out)


def _text_records(cfg: MixConfig, stats: Stats):
    """Valid text-only records of all text files, in file order, as LLaVA records."""
    for path in cfg.text:
        stem = Path(path).stem
        convert = lambda raw, where, stem=stem: to_llava(raw, f"{stem}-{where.index}")  # noqa: E731
        for rec, _ in iter_valid([path], stats, check=convert, count_as="read_text"):
            rec["source"] = Path(path).name if cfg.source == "file" else cfg.source
            yield rec


def mix_text(cfg: MixConfig, stats: Stats | None = None) -> Stats:
    """Run mix-text; returns the stats (also printed by the CLI)."""
    _check(cfg)
    stats = stats or Stats("mix-text")
    rng = random.Random(cfg.seed)
    total_bytes = sum(os.path.getsize(p) for p in [cfg.mm, *cfg.text])
    n_buckets = max(1, math.ceil(total_bytes / max(1, cfg.bucket_bytes)))
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.shuffle-") as tmp:
        buckets = [open(Path(tmp) / f"bucket-{i}.jsonl", "w", encoding="utf-8") for i in range(n_buckets)]
        n_mm = 0
        for rec, _ in track(iter_valid([cfg.mm], stats, count_as="read_mm"), "multimodal"):
            buckets[rng.randrange(n_buckets)].write(dumps(rec) + "\n")
            n_mm += 1
        n_avail = sum(1 for _ in _text_records(cfg, Stats("count", quiet=True)))
        n_text = round(cfg.ratio * n_mm / (1 - cfg.ratio))
        if n_text > n_avail and not cfg.allow_repeat:
            raise ConfigError(
                f"--ratio {cfg.ratio} needs {n_text:,} text records for {n_mm:,} multimodal ones, "
                f"but the text files hold {n_avail:,} valid records; lower --ratio, add text data, or pass --allow-repeat"
            )
        if n_text and not n_avail:
            raise ConfigError("the text files hold no valid text-only record")
        copies = Counter()
        if n_text:
            full, rest = divmod(n_text, n_avail)
            for i in range(n_avail):
                copies[i] = full
            for i in rng.sample(range(n_avail), rest):
                copies[i] += 1
        for i, rec in enumerate(track(_text_records(cfg, stats), "text", total=n_avail)):
            for k in range(copies.get(i, 0)):
                if k:
                    rec = {**rec, "id": f"{rec['id']}#rep{k}"}
                buckets[rng.randrange(n_buckets)].write(dumps(rec) + "\n")
        for b in buckets:
            b.close()
        with RecordWriter(out) as w:
            for i in range(n_buckets):
                with open(Path(tmp) / f"bucket-{i}.jsonl", encoding="utf-8") as fh:
                    lines = fh.read().splitlines()
                rng.shuffle(lines)
                for line in lines:
                    w.write_line(line)
    stats.add("kept_mm", n_mm)
    stats.add("added_text", n_text)
    stats.add("written", n_mm + n_text)
    stats.extra["actual_ratio"] = n_text / (n_mm + n_text) if n_mm + n_text else 0.0
    stats.extra["text_available"] = n_avail
    stats.extra["shuffle_buckets"] = n_buckets
    return stats
