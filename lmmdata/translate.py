"""`translate`: LLaVA records English -> Chinese, placeholder-safe, deduplicated, resumable.

Guarantees:
- protected spans (`<image>` and any `<...>` token, code, URLs, list markers,
  line breaks, `--protect` regexes) never reach the translator and come back
  byte-identical and in place (see `protect`);
- each distinct string is translated once per backend+model, ever: an in-chunk
  dedup plus a persistent cache (`tcache`);
- work is committed per chunk of records (cache, then output lines, then a
  progress file, each durable); after a kill, rerunning the same command skips
  committed chunks and the final OUT is byte-identical to an uninterrupted run;
- OUT appears only when complete (written as a hidden partial, then renamed).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .config import ConfigError
from .jsonio import RecordWriter, check_record_files, dumps, file_format, iter_items
from .progress import track
from .protect import LETTER, Piece, compile_patterns, join, segment
from .records import IMAGE, check_items, record_id
from .stats import Stats
from .tcache import TranslationCache
from .translator import ArgosBackend, Backend

CJK_TARGETS = ("zh", "zt", "ja", "ko")


@dataclass
class TranslateConfig:
    """Options of `lmmdata translate`."""

    inp: str
    out: str
    src: str = "en"
    tgt: str = "zh"
    package: str | None = None  # an .argosmodel file to install first
    cache: str | None = None  # cache directory (default: ~/.cache/lmm-toolkit/translate)
    batch_size: int = 512  # distinct strings per committed chunk
    workers: int | None = None  # CTranslate2 inter-op threads (default: all cores)
    beam_size: int = 4
    roles: list[str] = field(default_factory=lambda: ["human", "gpt"])
    protect: list[str] = field(default_factory=list)
    resume: bool = True
    keep_original: bool = False
    drop_suspicious: bool = False
    rejects: str | None = None


def suspicious(src: str, out: str, tgt: str) -> set[str]:
    """Quality flags of one translated string (empty, still Latin, odd length)."""
    flags = set()
    if not out.strip():
        return {"empty"}
    if tgt in CJK_TARGETS:
        letters = LETTER.findall(out)
        if letters and sum(c.isascii() for c in letters) / len(letters) > 0.5:
            flags.add("latin")
    if len(src) >= 10:
        lo, hi = (0.1, 1.5) if tgt in CJK_TARGETS else (0.4, 2.5)
        if not lo <= len(out) / len(src) <= hi:
            flags.add("length_ratio")
    return flags


class _State:
    """The partial output and progress file that make a run resumable."""

    def __init__(self, cfg: TranslateConfig):
        out = Path(cfg.out)
        self.partial = out.parent / f".{out.name}.partial.jsonl"
        self.progress = out.parent / f".{out.name}.progress.json"
        keep = {k: v for k, v in asdict(cfg).items() if k not in ("resume", "workers", "rejects", "package", "cache")}
        st = os.stat(cfg.inp)
        self.fingerprint = hashlib.sha256(json.dumps([keep, st.st_size, st.st_mtime_ns], sort_keys=True).encode()).hexdigest()

    def load(self) -> dict | None:
        try:
            state = json.loads(self.progress.read_text())
        except (OSError, ValueError):
            return None
        if state.get("fingerprint") != self.fingerprint or not self.partial.exists():
            return None
        return state

    def save(self, nbytes: int, stats: Stats) -> None:
        """Durably record the partial file's and the rejects file's lengths and the counters (`read` = items
        consumed)."""
        doc = {"fingerprint": self.fingerprint, "items": stats.counts["read"], "bytes": nbytes,
               "rejects_bytes": stats.rejects_committed(),
               "counts": dict(stats.counts), "skipped": dict(stats.skipped), "flags": dict(stats.flags)}
        tmp = self.progress.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.progress)


def _segments(rec: dict, cfg: TranslateConfig, pattern) -> list[list[Piece] | None]:
    """Per turn: its pieces, or None when the turn's role is not translated."""
    return [segment(t["value"], pattern) if t["from"] in cfg.roles else None for t in rec["conversations"]]


def _translate_record(rec: dict, turns: list[list[Piece] | None], cfg: TranslateConfig,
                      mapping: dict[str, str]) -> tuple[dict, set[str]]:
    flags: set[str] = set()
    conv = []
    for turn, pieces in zip(rec["conversations"], turns):
        if pieces is None:
            conv.append(dict(turn))
            continue
        for p in pieces:
            if p.translate:
                flags |= suspicious(p.text, mapping[p.text], cfg.tgt)
        conv.append({**turn, "value": join(pieces, mapping)})
    before = sum(t["value"].count(IMAGE) for t in rec["conversations"])
    if sum(t["value"].count(IMAGE) for t in conv) != before:
        flags.add("placeholders")
    out = {}
    for k, v in rec.items():
        out[k] = conv if k == "conversations" else v
        if k == "conversations" and cfg.keep_original:
            out[f"conversations_{cfg.src}"] = rec["conversations"]
    out["lang"] = cfg.tgt
    if flags:
        out["translation_flags"] = sorted(flags)
    return out, flags


def translate_file(cfg: TranslateConfig, stats: Stats | None = None, backend: Backend | None = None) -> Stats:
    """Run translate; returns the stats."""
    stats = stats or Stats("translate")
    check_record_files([cfg.inp], cfg.out)
    try:
        pattern = compile_patterns(cfg.protect)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    backend = backend or ArgosBackend(cfg.src, cfg.tgt, cfg.package, cfg.workers, cfg.beam_size)
    cache = TranslationCache(cfg.cache, backend.id)
    state = _State(cfg)
    resumed = state.load() if cfg.resume else None
    stats.open_rejects(keep=resumed.get("rejects_bytes", 0) if resumed else 0)
    if resumed:
        with open(state.partial, "r+b") as fh:
            fh.truncate(resumed["bytes"])
        stats.counts.update(resumed["counts"])
        stats.skipped.update(resumed["skipped"])
        stats.flags.update(resumed["flags"])
        stats.extra["resumed_at_item"] = stats.counts["read"]
    else:
        state.partial.unlink(missing_ok=True)
        state.progress.unlink(missing_ok=True)
    t0, n_strings0 = time.time(), stats.counts["strings"]

    def live() -> str:
        s = stats.counts["strings"] - n_strings0
        hits = stats.counts["cache_hits"] + stats.counts["dedup_hits"]
        rate = s / max(1e-9, time.time() - t0)
        return f"{rate:,.0f} strings/s  hit {hits / max(1, stats.counts['strings']):.0%}"

    items = itertools.islice(iter_items(cfg.inp), stats.counts["read"], None)
    with open(state.partial, "ab") as part:
        chunk: list[tuple[dict, object, list]] = []
        uniq: dict[str, None] = {}

        def commit() -> None:
            if uniq:
                texts = list(uniq)
                found = cache.get_many(texts)
                misses = [t for t in texts if t not in found]
                new = dict(zip(misses, backend.translate_batch(misses))) if misses else {}
                cache.put_many(new)
                stats.add("cache_hits", len(found))
                stats.add("translated", len(new))
                mapping = {**found, **new}
            else:
                mapping = {}
            lines = []
            for rec, where, turns in chunk:
                out, flags = _translate_record(rec, turns, cfg, mapping)
                for f in flags:
                    stats.flag(f)
                if flags and cfg.drop_suspicious:
                    stats.skip(where, record_id(rec), "suspicious_translation", f"translation looks wrong ({', '.join(sorted(flags))})")
                    continue
                lines.append(dumps(out) + "\n")
            stats.add("written", len(lines))
            part.write("".join(lines).encode("utf-8"))
            part.flush()
            os.fsync(part.fileno())
            state.save(part.tell(), stats)
            chunk.clear()
            uniq.clear()

        for rec, where in track(check_items(items, stats), "translate", extra=live):
            turns = _segments(rec, cfg, pattern)
            for pieces in turns:
                for p in pieces or ():
                    if p.translate:
                        stats.add("strings")
                        if p.text in uniq:
                            stats.add("dedup_hits")
                        uniq[p.text] = None
            chunk.append((rec, where, turns))
            if len(uniq) >= cfg.batch_size:
                commit()
        commit()
    cache.close()
    out = Path(cfg.out)
    if file_format(out) == "jsonl":
        os.replace(state.partial, out)
    else:
        with RecordWriter(out) as w, open(state.partial, encoding="utf-8") as fh:
            for line in fh:
                w.write_line(line.rstrip("\n"))
        state.partial.unlink()
    state.progress.unlink(missing_ok=True)
    stats.extra["strings_per_s"] = round((stats.counts["strings"] - n_strings0) / max(1e-9, time.time() - t0), 1)
    return stats
