"""`lmmdata pack`: LLaVA records -> tokenized, image-expanded samples -> 2048-token Arrow shards.

Per record: validate, render the chat template with exact labels, expand each
image to `<im_start>` + N x `<image>` + `<im_end>`, read and check its image
bytes. Samples go to a spill file on disk (only their lengths stay in memory),
`packing.pack_lengths` groups them into rows with streaming best-fit decreasing
and a bounded local search, and rows are written to shards. Memory is bounded
by the packing buffer, not the dataset. The output directory is staged under a
temp name and swapped in when complete; same inputs + seed give byte-identical
shards.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .config import ConfigError
from .hub import local_path
from .images import MAX_PIXELS, load_image
from .jsonio import check_record_files, usable_path
from .packing import pack_lengths
from .progress import ProgressBar
from .records import BadRecord, images_of, iter_valid
from .shards import FORMAT, FORMAT_VERSION, MANIFEST, TOKENIZER_DIR, ShardWriter, write_manifest
from .staging import remove_stale, staging_path
from .stats import Stats
from .template import IGNORE, NAMES, TemplateError, make_template, messages_of, special_tokens_for
from .tokenizer import TokenizerError, add_image_tokens, load_tokenizer, save_tokenizer, vocab_hash

CHUNK = 256  # records tokenized together (one batched tokenizer call)
LENGTH_BUCKET = 128  # width of the sample-length histogram buckets in the manifest


@dataclass
class PackConfig:
    """Options of `lmmdata pack`."""

    inputs: list[str]
    out: str
    tokenizer: str
    image_root: str | None = None
    image_tokens: int | None = None  # N tokens per image; or derived from `vision`
    vision: str | None = None  # vision config (file or directory) giving N = (size / patch)^2
    seq_len: int = 2048
    template: str = "auto"  # auto = the tokenizer's own chat template
    image_size: int | None = None  # downscale so the short side is this many pixels
    rows_per_shard: int = 1024
    seed: int = 0  # order of rows within each packing window
    truncate: bool = False  # cut over-long text-only samples to seq_len instead of skipping them
    buffer: int = 4096  # samples sorted together by the packer
    max_open: int = 256  # rows kept open for later samples
    refine: int = 32  # local-search trials per 512 rows (fewer, fuller rows); 0 = plain best-fit decreasing
    overwrite: bool = False
    rejects: str | None = None
    max_image_pixels: int = MAX_PIXELS  # per image, checked from the header before decoding (memory per decode)


def image_tokens_from_vision(spec: str) -> tuple[int, dict]:
    """N from a CLIP/SigLIP vision config: (image_size / patch_size)^2 for CLIP (CLS not counted).

    SigLIP has no CLS token, but lmmtrain's default VipLlava projector drops the first
    vision token anyway, so N is one less there (with `--projector mlp2x_gelu` pass
    `--image-tokens` explicitly).
    """
    from transformers import AutoConfig

    path = Path(local_path(spec, "--vision"))
    try:
        if path.is_file():
            raw = json.loads(path.read_text(encoding="utf-8"))
            cfg = raw.get("vision_config", raw)
        else:
            c = AutoConfig.from_pretrained(path)
            cfg = getattr(c, "vision_config", c).to_dict()
        size, patch = int(cfg["image_size"]), int(cfg["patch_size"])
        siglip = str(cfg.get("model_type", "")).startswith("siglip")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"--vision {spec}: cannot read image_size and patch_size from it ({e})") from None
    if size % patch:
        raise ConfigError(f"--vision {spec}: image_size {size} is not a multiple of patch_size {patch}")
    n = (size // patch) ** 2 - (1 if siglip else 0)
    return n, {"image_size": size, "patch_size": patch, "source": spec, "drops_first_patch": siglip}


def _check(cfg: PackConfig) -> tuple[int, dict | None]:
    if not cfg.inputs:
        raise ConfigError("give at least one input record file")
    check_record_files(cfg.inputs)
    if cfg.seq_len < 16:
        raise ConfigError(f"--seq-len must be at least 16, got {cfg.seq_len}")
    if cfg.rows_per_shard < 1 or cfg.buffer < 1 or cfg.max_open < 1:
        raise ConfigError("--rows-per-shard, buffer and max_open must be positive")
    if cfg.refine < 0:
        raise ConfigError("--refine must be 0 (off) or a positive number of trials")
    if cfg.template not in NAMES:
        raise ConfigError(f"--template {cfg.template!r}: choose one of {', '.join(NAMES)}")
    if cfg.image_root is not None and not Path(cfg.image_root).is_dir():
        raise ConfigError(f"--image-root {cfg.image_root}: no such directory")
    if cfg.image_size is not None and cfg.image_size < 1:
        raise ConfigError("--image-size must be positive")
    if cfg.max_image_pixels < 1:
        raise ConfigError(f"--max-image-pixels must be positive, got {cfg.max_image_pixels}")
    out = usable_path(cfg.out, "-o/--out")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not cfg.overwrite:
        raise ConfigError(f"{out} exists and is not empty; choose another -o or pass --overwrite")
    if (cfg.image_tokens is None) == (cfg.vision is None):
        raise ConfigError("give exactly one of --image-tokens N or --vision CONFIG (image tokens per image)")
    if cfg.vision is not None:
        n_tokens, vision = image_tokens_from_vision(cfg.vision)
    elif cfg.image_tokens < 1:
        raise ConfigError(f"--image-tokens must be positive, got {cfg.image_tokens}")
    else:
        n_tokens, vision = cfg.image_tokens, None
    if n_tokens + 2 > cfg.seq_len:
        raise ConfigError(f"one image is {n_tokens + 2} tokens, more than --seq-len {cfg.seq_len}")
    return n_tokens, vision


class _Spill:
    """Samples parked on disk while the packer decides their row; memory holds offsets only."""

    def __init__(self, path: Path):
        self._fh = open(path, "w+b")
        self._where: dict[int, tuple[int, int]] = {}
        self._next = 0
        self._end = 0  # append offset, kept here: seek/tell on the buffered file would flush every put
        self._dirty = False

    def put(self, sample: tuple) -> int:
        blob = pickle.dumps(sample, protocol=pickle.HIGHEST_PROTOCOL)
        key = self._next
        self._where[key] = (self._end, len(blob))
        self._fh.write(blob)
        self._end += len(blob)
        self._next += 1
        self._dirty = True
        return key

    def take(self, key: int) -> tuple:
        if self._dirty:
            self._fh.flush()
            self._dirty = False
        off, size = self._where.pop(key)
        return pickle.loads(os.pread(self._fh.fileno(), size, off))

    def close(self) -> None:
        self._fh.close()


@dataclass
class _Tally:
    """Packing figures gathered on the way (go to the manifest and the summary)."""

    seq_len: int
    samples: int = 0
    tokens: int = 0
    trained: int = 0
    image_tokens: int = 0
    rows: int = 0
    greedy_rows: int = 0
    greedy_open: int = 0
    lengths: Counter = field(default_factory=Counter)  # sample length bucket -> count
    images: Counter = field(default_factory=Counter)  # images per sample -> count

    def sample(self, length: int, n_images: int, trained: int, image_tokens: int) -> None:
        self.samples += 1
        self.tokens += length
        self.trained += trained
        self.image_tokens += image_tokens
        self.lengths[length // LENGTH_BUCKET * LENGTH_BUCKET] += 1
        self.images[n_images] += 1
        if self.greedy_open + length > self.seq_len or not self.greedy_rows:  # sequential concatenation baseline
            self.greedy_rows += 1
            self.greedy_open = 0
        self.greedy_open += length

    def as_dict(self) -> dict:
        cap = self.seq_len
        return {
            "samples": self.samples, "rows": self.rows, "tokens": self.tokens, "trained_tokens": self.trained,
            "image_tokens": self.image_tokens,
            "real_token_fraction": self.tokens / (self.rows * cap) if self.rows else 1.0,
            "naive_padding_fraction": self.tokens / (self.samples * cap) if self.samples else 1.0,
            "greedy_concat_fraction": self.tokens / (self.greedy_rows * cap) if self.greedy_rows else 1.0,
            "sample_length_histogram": {f"{k}-{k + LENGTH_BUCKET - 1}": v for k, v in sorted(self.lengths.items())},
            "images_per_sample": {str(k): v for k, v in sorted(self.images.items())},
        }


def pack(cfg: PackConfig, stats: Stats) -> dict:
    """Run `lmmdata pack`; returns the manifest written to `cfg.out`."""
    n_tokens, vision = _check(cfg)  # every setting checked before the (slow) tokenizer load
    try:
        tok = load_tokenizer(cfg.tokenizer)
        image_ids = add_image_tokens(tok)
        template = make_template(cfg.template, tok, image_ids, n_tokens)
    except (TokenizerError, TemplateError) as e:
        raise ConfigError(str(e)) from None
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    removed = remove_stale(out)
    if removed:
        stats.extra["stale_staging_removed"] = [p.name for p in removed]
    staging = staging_path(out)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        manifest = _pack_into(cfg, stats, staging, tok, template, n_tokens, vision)
        _swap_in(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _pack_into(cfg: PackConfig, stats: Stats, staging: Path, tok, template, n_tokens: int, vision) -> dict:
    root = Path(cfg.image_root) if cfg.image_root else None
    spill = _Spill(staging / ".spill")
    tally = _Tally(cfg.seq_len)
    writer = ShardWriter(staging, cfg.rows_per_shard)
    rng = random.Random(cfg.seed)

    pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))  # image decode releases the GIL

    bar = ProgressBar("pack", extra=lambda: f"{tally.rows:,} rows")

    def samples():
        valid = bar.wrap(iter_valid(cfg.inputs, stats))
        for chunk in _chunks(valid, CHUNK):
            for (rec, where), result in zip(chunk, _encode_chunk([r for r, _ in chunk], cfg, template, root, stats, pool)):
                if isinstance(result, BadRecord):
                    stats.skip(where, rec.get("id"), result.reason, result.message)
                    continue
                ids, labels, images = result
                sample = (str(rec["id"]) if rec.get("id") is not None else str(where), ids, labels, images)
                tally.sample(len(ids), len(images), int((labels != IGNORE).sum()), len(images) * (n_tokens + 2))
                yield spill.put(sample), len(ids)

    window: list[list] = []

    def write(bins: list[list]) -> None:
        rng.shuffle(bins)
        for b in bins:
            parts = [spill.take(key) for key, _ in b]
            writer.add({
                "input_ids": np.concatenate([p[1] for p in parts]),
                "labels": np.concatenate([p[2] for p in parts]),
                "seq_lens": [len(p[1]) for p in parts],
                "images": [img for p in parts for img in p[3]],
                "sample_ids": [p[0] for p in parts],
            })
            tally.rows += 1
        bins.clear()

    try:
        with bar:
            for b in pack_lengths(samples(), cfg.seq_len, cfg.buffer, cfg.max_open, refine_attempts=cfg.refine):
                window.append(b)
                if len(window) >= cfg.max_open:
                    write(window)
            write(window)
        shards = writer.close()
    finally:
        pool.shutdown()
        spill.close()
        os.unlink(staging / ".spill")
    stats.add("samples", tally.samples)
    stats.add("rows", tally.rows)
    stats.add("shards", len(shards))
    packing = tally.as_dict()
    stats.extra["real_token_fraction"] = packing["real_token_fraction"]
    stats.extra["naive_padding_fraction"] = packing["naive_padding_fraction"]
    save_tokenizer(tok, staging / TOKENIZER_DIR)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tokenizer": {"name": cfg.tokenizer, "vocab_hash": vocab_hash(tok), "vocab_size": len(tok),
                      "saved_in": TOKENIZER_DIR},
        "template": {"name": template.name, "chat_template": template.jinja},
        "special_tokens": special_tokens_for(template),
        "image_tokens": n_tokens,
        "image_size": cfg.image_size,
        "vision": vision,
        "seq_len": cfg.seq_len,
        "rows": tally.rows,
        "samples": tally.samples,
        "shards": shards,
        "packing": {**packing, "algorithm": "streaming best-fit decreasing + local search", "buffer": cfg.buffer,
                    "max_open": cfg.max_open, "refine_attempts": cfg.refine},
        "skipped": dict(stats.skipped),
        "flagged": dict(stats.flags),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "config": asdict(cfg),
    }
    write_manifest(staging, manifest)
    return manifest


def _chunks(items, size: int):
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _encode_chunk(recs: list[dict], cfg: PackConfig, template, root: Path | None, stats: Stats,
                  pool: ThreadPoolExecutor) -> list:
    """Per record (input_ids, labels, image bytes) or the BadRecord saying why it is skipped."""
    if root is None and any(images_of(r) for r in recs):
        raise ConfigError("the records have images; give --image-root DIR (image paths are relative to it)")
    results: list = [_bounded(rec, cfg, template) for rec in recs]
    todo = [i for i, r in enumerate(results) if not isinstance(r, BadRecord)]
    encoded = template.encode_many([template.render(messages_of(results[i])) for i in todo])
    for i, (ids, labels, n_img) in zip(todo, encoded):
        try:
            results[i] = _check_sample(recs[i], ids, labels, n_img, cfg, stats)
        except BadRecord as e:
            results[i] = e

    def images(i: int):
        try:
            return [load_image(root, p, cfg.image_size, cfg.max_image_pixels) for p in images_of(recs[i])]
        except BadRecord as e:
            return e

    todo = [i for i, r in enumerate(results) if not isinstance(r, BadRecord) and images_of(recs[i])]
    for i, imgs in zip(todo, pool.map(images, todo)):
        results[i] = imgs if isinstance(imgs, BadRecord) else (*results[i][:2], imgs)
    return results


def _bounded(rec: dict, cfg: PackConfig, template) -> dict | BadRecord:
    """The record, or too_long before any tokenizing when its text cannot fit in --seq-len tokens whatever the
    tokenizer does (no token covers more characters than the vocabulary's longest entry): time and memory stay
    bounded for any text length. With --truncate a text-only record is cut to what can matter instead."""
    limit = cfg.seq_len * template.max_token_chars
    chars = sum(len(t["value"]) for t in rec["conversations"])
    if chars <= limit:
        return rec
    if images_of(rec) or not cfg.truncate:
        hint = "" if images_of(rec) else " (text-only: --truncate would cut it)"
        return BadRecord("too_long", f"{chars:,} characters: more than --seq-len {cfg.seq_len} tokens whatever the "
                                     f"tokenizer (a token covers at most {template.max_token_chars} characters){hint}")
    conv, left = [], limit
    for turn in rec["conversations"]:
        if left <= 0:
            break
        conv.append({**turn, "value": turn["value"][:left]})
        left -= len(conv[-1]["value"])
    return {**rec, "conversations": conv}


def _check_sample(rec: dict, ids: list[int], labels: list[int], n_img: int, cfg: PackConfig, stats: Stats) -> tuple:
    n_paths = len(images_of(rec))
    if n_img != n_paths:  # validate() guarantees this; a template that drops text would break it
        raise BadRecord("placeholder_mismatch", f"{n_img} image(s) rendered but {n_paths} in the record")
    if len(ids) > cfg.seq_len:
        if n_img or not cfg.truncate:
            hint = "" if n_img else " (text-only: --truncate would cut it)"
            raise BadRecord("too_long", f"{len(ids)} tokens > --seq-len {cfg.seq_len}{hint}")
        ids, labels = ids[: cfg.seq_len], labels[: cfg.seq_len]
        stats.flag("truncated")
    ids_a = np.asarray(ids, dtype=np.int32)
    labels_a = np.asarray(labels, dtype=np.int32)
    if not (labels_a != IGNORE).any():
        raise BadRecord("no_trained_tokens", "no assistant tokens left to train on")
    return ids_a, labels_a, []


def _swap_in(staging: Path, out: Path) -> None:
    """Replace `out` with the finished `staging` directory (old output removed only after)."""
    if not (staging / MANIFEST).is_file():
        raise RuntimeError("internal error: staging directory has no manifest")
    old = None
    if out.exists():
        old = staging_path(out, "old")
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
