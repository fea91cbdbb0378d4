"""Training data: a map-style dataset over shard directories and the packed-row collator.

Rows are read from memory-mapped Arrow files (opened lazily in each worker, so
nothing is copied between processes). The dataset is map-style on purpose: the
HF Trainer's sampler then splits it across ranks without overlap, reshuffles it
deterministically every epoch from the seed, and skips the consumed batches on
`--resume`, so mid-epoch resumption lands on the very next row.
"""

from __future__ import annotations

import bisect
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lmmdata.hub import local_path
from lmmdata.shards import ShardError, open_tables, read_manifest
from lmmdata.template import IGNORE


def check_compatible(dirs: list[str]) -> dict:
    """Manifests of all shard directories; they must share tokenizer, special ids and image tokens."""
    if not dirs:
        raise ShardError("no shard directories given (set `data:` in the config or pass --data DIR)")
    manifests = [read_manifest(d) for d in dirs]
    first = manifests[0]
    for d, m in zip(dirs[1:], manifests[1:]):
        for key in ("image_tokens", "special_tokens"):
            if m[key] != first[key]:
                raise ShardError(f"{d}: {key} {m[key]} differ from {dirs[0]}'s {first[key]}; pack all data the same way")
        if m["tokenizer"]["vocab_hash"] != first["tokenizer"]["vocab_hash"]:
            raise ShardError(f"{d} was packed with a different tokenizer than {dirs[0]} (vocab hash differs)")
    return first


def image_processor_for(source: str | None, vision_config):
    """The vision model's image processor: torchvision backend when installed, else PIL (asked for
    explicitly, so transformers has no fallback to warn about)."""
    import transformers
    from transformers import AutoImageProcessor
    from transformers.utils import is_torchvision_available

    backend = "torchvision" if is_torchvision_available() else "pil"
    if source:
        source = local_path(source, "vision")
        try:
            return AutoImageProcessor.from_pretrained(source, backend=backend)
        except (OSError, ValueError):
            pass  # a vision config without a processor file: build the standard one below
    size = vision_config.image_size
    kind = "Siglip" if vision_config.model_type.startswith("siglip") else "CLIP"
    cls = getattr(transformers, f"{kind}ImageProcessor{'Pil' if backend == 'pil' else ''}")
    if kind == "Siglip":
        return cls(size={"height": size, "width": size})
    return cls(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


class ShardDataset(torch.utils.data.Dataset):
    """Packed rows of one or more shard directories, with images as pixel tensors."""

    def __init__(self, dirs: list[str], image_processor=None):
        self.dirs = [str(d) for d in dirs]
        self.manifest = check_compatible(self.dirs)
        self.image_processor = image_processor
        self.image_tokens = self.manifest["image_tokens"]
        self.special = self.manifest["special_tokens"]
        counts, self.where = [], []
        for d in self.dirs:
            for s in read_manifest(d)["shards"]:
                counts.append(s["rows"])
                self.where.append(f"{d}/{s['file']}")
        self.starts = [0]
        for c in counts:
            self.starts.append(self.starts[-1] + c)
        self._tables: list | None = None

    def __len__(self) -> int:
        return self.starts[-1]

    def __getstate__(self) -> dict:  # workers reopen the memory maps instead of pickling tables
        return {**self.__dict__, "_tables": None}

    def _table(self, k: int):
        if self._tables is None:
            self._tables = [t for d in self.dirs for t in open_tables(d)]
        return self._tables[k]

    def locate(self, i: int) -> tuple[int, int]:
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} out of range ({len(self)} rows)")
        k = bisect.bisect_right(self.starts, i) - 1
        return k, i - self.starts[k]

    def __getitem__(self, i: int) -> dict[str, Any]:
        k, j = self.locate(i)
        t = self._table(k)
        ids = torch.from_numpy(t.column("input_ids")[j].values.to_numpy().astype(np.int64))
        labels = torch.from_numpy(t.column("labels")[j].values.to_numpy().astype(np.int64))
        seq_lens = t.column("seq_lens")[j].values.to_pylist()
        images = t.column("images")[j].values.to_pylist()
        where = f"{self.where[k]} row {j}"
        if sum(seq_lens) != len(ids) or len(labels) != len(ids):
            raise ShardError(f"{where}: seq_lens sum {sum(seq_lens)} != {len(ids)} tokens; the shard is corrupt")
        n_image_tokens = int((ids == self.special["image"]).sum())
        if n_image_tokens != len(images) * self.image_tokens:
            raise ShardError(f"{where}: {n_image_tokens} <image> tokens for {len(images)} image(s) x "
                             f"{self.image_tokens}; the shard is corrupt")
        item = {"input_ids": ids, "labels": labels, "seq_lens": seq_lens, "n_images": len(images)}
        if images and self.image_processor is not None:
            item["pixel_values"] = self.pixel_values(images, where)
        return item

    def pixel_values(self, images: list[bytes], where: str) -> torch.Tensor:
        from PIL import Image, UnidentifiedImageError

        try:
            pil = [Image.open(io.BytesIO(b)).convert("RGB") for b in images]
        except (UnidentifiedImageError, OSError) as e:
            raise ShardError(f"{where}: an image does not decode ({e}); the shard is corrupt") from None
        return self.image_processor(images=pil, return_tensors="pt")["pixel_values"]


def position_ids_for(seq_lens: list[int]) -> torch.Tensor:
    """Positions restarting at 0 at every sample boundary."""
    return torch.cat([torch.arange(n) for n in seq_lens]) if seq_lens else torch.zeros(0, dtype=torch.long)


@dataclass
class PackedCollator:
    """Rows -> a batch whose samples cannot see each other.

    Position ids restart at every sample and no attention mask is passed, so
    transformers builds a block-diagonal causal mask (SDPA/eager) or calls
    flash-attention's varlen kernel. `flat` concatenates all rows into one
    (1, total) sequence (no padding at all; for flash-attention); `rows` pads
    rows to the longest with a tail that forms its own block and is never
    trained. The first label of each sample is ignored so no sample is trained
    to predict the start of the next.
    """

    pad_id: int
    layout: str = "rows"

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        ids, labels, pos = [], [], []
        for it in items:
            lab = it["labels"].clone()
            lens = torch.tensor(it["seq_lens"], dtype=torch.long)
            lab[lens.cumsum(0) - lens] = IGNORE  # first token of every sample
            ids.append(it["input_ids"])
            labels.append(lab)
            pos.append(position_ids_for(it["seq_lens"]))
        real = sum(len(x) for x in ids)
        if self.layout == "flat":
            batch = {"input_ids": torch.cat(ids)[None], "labels": torch.cat(labels)[None], "position_ids": torch.cat(pos)[None]}
        elif self.layout == "rows":
            width = max(len(x) for x in ids)
            pad = [width - len(x) for x in ids]
            batch = {
                "input_ids": torch.stack([torch.cat([x, torch.full((p,), self.pad_id)]) for x, p in zip(ids, pad)]),
                "labels": torch.stack([torch.cat([x, torch.full((p,), IGNORE)]) for x, p in zip(labels, pad)]),
                "position_ids": torch.stack([torch.cat([x, torch.arange(p)]) for x, p in zip(pos, pad)]),
            }
        else:
            raise ValueError(f"unknown layout {self.layout!r} (flat or rows)")
        pixels = [it["pixel_values"] for it in items if "pixel_values" in it]
        if pixels:
            batch["pixel_values"] = torch.cat(pixels)
        batch["lmm_stats"] = {"real_tokens": real, "slots": batch["input_ids"].numel(), "rows": len(items),
                              "images": sum(it["n_images"] for it in items)}
        return batch
