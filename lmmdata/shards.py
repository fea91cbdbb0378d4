"""The shard format: Arrow IPC files + manifest.json (see DESIGN.md, "Shards").

Writing: `ShardWriter` streams rows into `shard-NNNNN.arrow` files in record
batches (memory: one batch), each file written under a temp name, fsynced and
renamed, with its sha256 computed on the way. The whole directory is staged and
swapped in by `lmmdata.pack`, so a reader never sees a half-written set.

Reading: `scan(dir)` is a polars LazyFrame over all shards (for notebooks and
stats), `open_tables(dir)` memory-maps them with pyarrow (for the trainer),
`read_row(dir, i)` decodes one packed row back into samples (text with images
shown as `<image x N>`, trained spans, PIL images).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from .layout import FORMAT, FORMAT_VERSION, MANIFEST, TOKENIZER_DIR  # noqa: F401  (part of this module's API)
from .staging import write_atomic
from .template import IGNORE

SCHEMA = pa.schema(
    [
        pa.field("input_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("labels", pa.list_(pa.int32()), nullable=False),
        pa.field("seq_lens", pa.list_(pa.int32()), nullable=False),
        pa.field("images", pa.list_(pa.binary()), nullable=False),
        pa.field("sample_ids", pa.list_(pa.string()), nullable=False),
    ],
    metadata={"lmm_shard_format": str(FORMAT_VERSION)},
)


class ShardError(ValueError):
    """A shard directory that cannot be used (missing, wrong version, corrupt)."""


def shard_name(i: int) -> str:
    return f"shard-{i:05d}.arrow"


class _HashingFile(io.RawIOBase):
    """A write-only file that hashes what passes through (sha256 without a second read)."""

    def __init__(self, path: Path):
        self._fh = open(path, "wb")
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.sha.update(b)
        self.size += len(b)
        return self._fh.write(b)

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
        super().close()


class ShardWriter:
    """Append rows; a new shard starts every `rows_per_shard` rows. `close()` returns shard infos."""

    def __init__(self, out_dir: Path, rows_per_shard: int = 1024, batch_rows: int = 64):
        self.out_dir = Path(out_dir)
        self.rows_per_shard = rows_per_shard
        self.batch_rows = batch_rows
        self.shards: list[dict[str, Any]] = []
        self._rows: list[dict] = []
        self._writer: pa.ipc.RecordBatchFileWriter | None = None
        self._file: _HashingFile | None = None
        self._in_shard = 0
        self._samples = 0

    def add(self, row: dict) -> None:
        if self._writer is None:
            self._open()
        self._rows.append(row)
        self._in_shard += 1
        self._samples += len(row["seq_lens"])
        if len(self._rows) >= self.batch_rows:
            self._flush()
        if self._in_shard >= self.rows_per_shard:
            self._finish()

    def _open(self) -> None:
        name = shard_name(len(self.shards))
        self._file = _HashingFile(self.out_dir / f".{name}.tmp")
        self._writer = pa.ipc.new_file(self._file, SCHEMA)
        self._in_shard = self._samples = 0

    def _flush(self) -> None:
        if self._rows:
            cols = {f.name: [r[f.name] for r in self._rows] for f in SCHEMA}
            self._writer.write_batch(pa.RecordBatch.from_pydict(cols, schema=SCHEMA))
            self._rows.clear()

    def _finish(self) -> None:
        self._flush()
        self._writer.close()
        self._file.close()
        name = shard_name(len(self.shards))
        os.replace(self.out_dir / f".{name}.tmp", self.out_dir / name)
        self.shards.append({"file": name, "rows": self._in_shard, "samples": self._samples,
                            "sha256": self._file.sha.hexdigest(), "bytes": self._file.size})
        self._writer = self._file = None

    def close(self) -> list[dict[str, Any]]:
        if self._writer is not None:
            self._finish()
        return self.shards


# ---- manifest ------------------------------------------------------------------------------

def write_manifest(out_dir: Path, manifest: dict) -> None:
    write_atomic(Path(out_dir) / MANIFEST, json.dumps(manifest, ensure_ascii=False, indent=2) + "\n")


def read_manifest(shard_dir: str | os.PathLike) -> dict:
    """The manifest, after checking that this is a shard directory of a version we read."""
    path = Path(shard_dir) / MANIFEST
    if not path.is_file():
        raise ShardError(f"{shard_dir}: not a shard directory (no {MANIFEST}); make one with `lmmdata pack`")
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ShardError(f"{path}: unreadable manifest ({e})") from None
    if m.get("format") != FORMAT:
        raise ShardError(f"{path}: format is {m.get('format')!r}, expected {FORMAT!r}")
    if m.get("format_version") != FORMAT_VERSION:
        raise ShardError(f"{path}: shard format version {m.get('format_version')!r}; this lmm-toolkit reads "
                         f"version {FORMAT_VERSION}. Re-pack the data with this version's `lmmdata pack`.")
    return m


def shard_paths(shard_dir: str | os.PathLike) -> list[Path]:
    m = read_manifest(shard_dir)
    paths = [Path(shard_dir) / s["file"] for s in m["shards"]]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise ShardError(f"{shard_dir}: shard file(s) listed in the manifest are missing: {', '.join(missing)}")
    return paths


@dataclass
class Verdict:
    """What `verify` found: shard files as the manifest lists them, or missing, changed, or not listed."""

    ok: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.changed or self.extra)

    def __str__(self) -> str:
        parts = [f"{len(self.ok)} shard(s) match the manifest"]
        parts += [f"{what}: {', '.join(names)}" for what, names in (
            ("missing", self.missing), ("changed or corrupt (sha256 differs)", self.changed),
            ("not in the manifest", self.extra)) if names]
        return "; ".join(parts)


def verify(shard_dir: str | os.PathLike) -> Verdict:
    """Every listed shard's sha256 against the manifest, plus shard files the manifest does not list."""
    m = read_manifest(shard_dir)
    verdict = Verdict()
    for s in m["shards"]:
        path = Path(shard_dir) / s["file"]
        if not path.is_file():
            verdict.missing.append(s["file"])
            continue
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        (verdict.ok if h.hexdigest() == s["sha256"] else verdict.changed).append(s["file"])
    listed = {s["file"] for s in m["shards"]}
    verdict.extra = sorted(p.name for p in Path(shard_dir).glob("*.arrow") if p.name not in listed)
    return verdict


def check_quick(shard_dir: str | os.PathLike) -> None:
    """Cheap integrity check before training: every listed file is there with its size (when the manifest has
    it) and row count (the Arrow footer). A flipped byte inside is found only by `verify` (sha256)."""
    m = read_manifest(shard_dir)
    for s in m["shards"]:
        path = Path(shard_dir) / s["file"]
        if not path.is_file():
            raise ShardError(f"{path}: listed in the manifest but missing; re-pack, or restore the file")
        if "bytes" in s and path.stat().st_size != s["bytes"]:
            raise ShardError(f"{path}: {path.stat().st_size} bytes, the manifest says {s['bytes']} (truncated or "
                             "replaced); re-pack, or check with `lmmdata inspect --verify`")
        try:
            reader = pa.ipc.open_file(pa.memory_map(str(path), "r"))
            rows = sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
        except (pa.ArrowInvalid, OSError) as e:
            raise ShardError(f"{path}: not a readable Arrow IPC file ({e})") from None
        if rows != s["rows"]:
            raise ShardError(f"{path}: {rows} rows, the manifest says {s['rows']}; re-pack the data")


def open_tables(shard_dir: str | os.PathLike) -> list[pa.Table]:
    """Each shard as a memory-mapped pyarrow Table (zero-copy; pages load on access)."""
    tables = []
    for p in shard_paths(shard_dir):
        try:
            table = pa.ipc.open_file(pa.memory_map(str(p), "r")).read_all()
        except (pa.ArrowInvalid, OSError) as e:
            raise ShardError(f"{p}: not a readable Arrow IPC file ({e})") from None
        if not table.schema.equals(SCHEMA, check_metadata=False):
            raise ShardError(f"{p}: columns {table.schema.names} do not match shard format {FORMAT_VERSION}")
        tables.append(table)
    return tables


def scan(shard_dir: str | os.PathLike):
    """All rows of all shards as a polars LazyFrame (columns as in DESIGN.md)."""
    import polars as pl

    return pl.scan_ipc([str(p) for p in shard_paths(shard_dir)])


def load_shard_tokenizer(shard_dir: str | os.PathLike):
    """The tokenizer saved with the shards (with the image tokens added); cached per directory."""
    path = Path(shard_dir).resolve() / TOKENIZER_DIR
    if not path.is_dir():
        raise ShardError(f"{shard_dir}: no saved tokenizer in {TOKENIZER_DIR}/")
    return _load_tokenizer_cached(str(path), (path / "tokenizer.json").stat().st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _load_tokenizer_cached(path: str, mtime: int):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


# ---- decoding ------------------------------------------------------------------------------

@dataclass
class Sample:
    """One decoded sample of a packed row."""

    id: str
    input_ids: list[int]
    labels: list[int]
    spans: list[tuple[str, str]]  # (text, kind): kind "text" (not trained), "trained" or "image"
    images: list = field(default_factory=list)  # PIL images in placeholder order

    @property
    def text(self) -> str:
        return "".join(t for t, _ in self.spans)

    @property
    def trained_text(self) -> list[str]:
        return [t for t, k in self.spans if k == "trained"]

    def __repr__(self) -> str:
        return f"Sample(id={self.id!r}, tokens={len(self.input_ids)}, images={len(self.images)}, text={self.text[:80]!r}...)"

    def _repr_html_(self) -> str:
        import html

        style = {"trained": "background:#d4f7d4", "image": "background:#f0d4f7", "text": ""}
        body = "".join(f'<span style="{style[k]}">{html.escape(t)}</span>' for t, k in self.spans)
        return f"<div><b>{html.escape(self.id)}</b> ({len(self.input_ids)} tokens)<pre style='white-space:pre-wrap'>{body}</pre></div>"


def decode_spans(tokenizer, input_ids: list[int], labels: list[int], image_ids: dict[str, int]) -> list[tuple[str, str]]:
    """Group tokens into runs (image / trained / not trained) and decode each run."""
    spans: list[tuple[str, str]] = []
    i, n = 0, len(input_ids)
    while i < n:
        if input_ids[i] == image_ids["im_start"]:
            j = i + 1
            while j < n and input_ids[j] == image_ids["image"]:
                j += 1
            closed = j < n and input_ids[j] == image_ids["im_end"]
            spans.append((f"<image x {j - i - 1}>" if closed else "<image ?>", "image"))
            i = j + 1 if closed else j
            continue
        trained = labels[i] != IGNORE
        j = i
        while j < n and (labels[j] != IGNORE) == trained and input_ids[j] != image_ids["im_start"]:
            j += 1
        spans.append((tokenizer.decode(input_ids[i:j], skip_special_tokens=False), "trained" if trained else "text"))
        i = j
    return spans


def read_row(shard_dir: str | os.PathLike, i: int, tokenizer=None) -> list[Sample]:
    """Row `i` (0-based, across shards) decoded into its samples."""
    from PIL import Image

    m = read_manifest(shard_dir)
    if not 0 <= i < m["rows"]:
        raise IndexError(f"row {i} out of range: {shard_dir} has {m['rows']} rows")
    for s in m["shards"]:
        if i < s["rows"]:
            break
        i -= s["rows"]
    table = pa.ipc.open_file(pa.memory_map(str(Path(shard_dir) / s["file"]), "r")).read_all()
    row = table.slice(i, 1).to_pylist()[0]
    tokenizer = tokenizer or load_shard_tokenizer(shard_dir)
    ids_map = m["special_tokens"]
    out, start, img = [], 0, 0
    for sid, length in zip(row["sample_ids"], row["seq_lens"]):
        ids, labels = row["input_ids"][start:start + length], row["labels"][start:start + length]
        n_img = ids.count(ids_map["im_start"])
        images = [Image.open(io.BytesIO(b)) for b in row["images"][img:img + n_img]]
        out.append(Sample(sid, ids, labels, decode_spans(tokenizer, ids, labels, ids_map), images))
        start += length
        img += n_img
    return out
