"""`translate`: LLaVA records English -> Chinese, placeholder-safe, deduplicated, resumable.

Guarantees:
- protected spans (`<image>` and any `<...>` token, code, URLs, emoji, list
  markers, line breaks, `--protect` regexes) never reach the translator (an LLM
  sees them only as numbered sentinels) and come back byte-identical and in
  place (see `protect`); text with no Latin letter is kept as it is for a
  Chinese/Japanese/Korean target;
- each final string passes the quality gate (`quality`) or its record is
  flagged (`translation_flags`; dropped with --drop-suspicious); a line whose
  sentinels did not survive keeps its source text, so no record is ever broken;
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
from typing import Literal

from .config import ConfigError
from .jsonio import RecordWriter, check_record_files, dumps, file_format, iter_items
from .progress import ProgressBar
from .protect import LATIN, LETTER, Piece, compile_patterns, join, segment, with_sentinels
from .quality import CJK_TARGETS
from .quality import flags as quality_flags
from .records import IMAGE, check_items, record_id
from .stats import Stats
from .tcache import TranslationCache
from .translator import Backend, make_backend


ComputeType = Literal["default", "auto", "float32", "float16", "bfloat16", "int8", "int8_float32", "int8_float16",
                      "int8_bfloat16", "int16"]  # CTranslate2's names

@dataclass
class TranslateConfig:
    """Options of `lmmdata translate`."""

    inp: str
    out: str
    src: str = "en"
    tgt: str = "zh"
    backend: Literal["argos", "ct2", "openai"] = "argos"
    model: str | None = None  # ct2: a CTranslate2 model directory; openai: the model name the server serves
    base_url: list[str] = field(default_factory=list)  # openai: server(s), e.g. http://localhost:8000/v1
    api_key_env: str | None = "OPENAI_API_KEY"  # openai: environment variable holding the API key
    concurrency: int = 64  # openai: requests in flight over the whole fleet
    prompt: str | None = None  # openai: a YAML file with system/user/retry prompts (default: built in)
    temperature: float = 0.0  # openai: sampling temperature (0 = greedy, reproducible resume)
    max_tokens: int = 4096  # openai: answer length cap per string (also 2 x source chars + 64)
    retries: int = 2  # openai: follow-up attempts for an answer the quality gate flags
    timeout: float = 300.0  # openai: seconds per request
    device: Literal["cpu", "cuda"] = "cpu"  # argos / ct2: where CTranslate2 runs
    compute_type: ComputeType = "default"  # argos / ct2: CTranslate2 precision (default: the model's own)
    target_prefix: str | None = None  # ct2: a target-language token some multilingual models need (>>cmn_Hans<<)
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


class _State:
    """The partial output and progress file that make a run resumable."""

    def __init__(self, cfg: TranslateConfig):
        out = Path(cfg.out)
        self.partial = out.parent / f".{out.name}.partial.jsonl"
        self.progress = out.parent / f".{out.name}.progress.json"
        ignore = ("resume", "workers", "rejects", "package", "cache", "base_url", "concurrency", "api_key_env",
                  "timeout", "device", "compute_type")  # how and where it runs, not what it writes
        keep = {k: v for k, v in asdict(cfg).items() if k not in ignore}
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


def _segments(rec: dict, cfg: TranslateConfig, pattern, sentinels: bool) -> list[list[Piece] | None]:
    """Per turn: its pieces (whole lines with sentinels for an LLM), or None when the role is not translated."""
    needs = LATIN if cfg.tgt in CJK_TARGETS and cfg.src not in CJK_TARGETS else LETTER
    out: list[list[Piece] | None] = []
    for t in rec["conversations"]:
        if t["from"] not in cfg.roles:
            out.append(None)
            continue
        pieces = segment(t["value"], pattern, needs)
        out.append(with_sentinels(pieces) if sentinels else pieces)
    return out


def _final(src: str, out: str | None, tgt: str) -> tuple[str, set[str]]:
    """The text a piece becomes and its flags: the source itself when the engine gave nothing or lost sentinels."""
    if out is None:
        return src, {"untranslated"}
    flags = quality_flags(src, out, tgt)
    return (src, flags) if "sentinels" in flags else (out, flags)


def _translate_record(rec: dict, turns: list[list[Piece] | None], cfg: TranslateConfig,
                      mapping: dict[str, str | None]) -> tuple[dict, set[str]]:
    flags: set[str] = set()
    conv = []
    for turn, pieces in zip(rec["conversations"], turns):
        if pieces is None:
            conv.append(dict(turn))
            continue
        final = {}
        for p in pieces:
            if p.translate:
                final[p.text], f = _final(p.text, mapping[p.text], cfg.tgt)
                flags |= f
        conv.append({**turn, "value": join(pieces, final)})
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


def _every(n: int, fn):
    """`fn` on every n-th call (from any thread)."""
    calls = itertools.count(1)
    return lambda: fn() if next(calls) % n == 0 else None


def translate_file(cfg: TranslateConfig, stats: Stats | None = None, backend: Backend | None = None) -> Stats:
    """Run translate; returns the stats."""
    stats = stats or Stats("translate")
    check_record_files([cfg.inp], cfg.out)
    try:
        pattern = compile_patterns(cfg.protect)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    backend = backend or make_backend(cfg)
    sentinels = getattr(backend, "sentinels", False)
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

    counters = getattr(backend, "counters", None)

    def live() -> str:
        s = stats.counts["strings"] - n_strings0
        hits = stats.counts["cache_hits"] + stats.counts["dedup_hits"]
        dt = max(1e-9, time.time() - t0)
        text = f"{s / dt:,.0f} strings/s  hit {hits / max(1, stats.counts['strings']):.0%}"
        if counters is not None:
            text += (f"  {counters['tokens'] / dt:,.0f} tok/s  {counters['requests']:,} requests"
                     f"  retries {counters['retries']:,} (server {counters['server_retries']:,})")
        return text

    items = itertools.islice(iter_items(cfg.inp), stats.counts["read"], None)
    with open(state.partial, "ab") as part, ProgressBar("translate", extra=live) as bar:
        if hasattr(backend, "on_progress"):
            backend.on_progress = _every(64, bar.refresh)
        chunk: list[tuple[dict, object, list]] = []
        uniq: dict[str, None] = {}

        def commit() -> None:
            if uniq:
                texts = list(uniq)
                found = cache.get_many(texts)
                misses = [t for t in texts if t not in found]
                new = dict(zip(misses, backend.translate_batch(misses))) if misses else {}
                cache.put_many({k: v for k, v in new.items() if v is not None})
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

        for rec, where in bar.wrap(check_items(items, stats)):
            turns = _segments(rec, cfg, pattern, sentinels)
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
    if counters is not None:
        stats.extra.update({k: v for k, v in counters.items()})
        stats.extra["tokens_per_s"] = round(counters["tokens"] / max(1e-9, time.time() - t0), 1)
    if hasattr(backend, "close"):
        backend.close()
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
