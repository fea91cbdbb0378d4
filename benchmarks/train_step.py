"""Benchmark one training step: our packed step vs HF Llava fed one padded sample per row.

Both sides train the same tiny model shape (tiny preset: CLIP 64 px / patch 16 ->
16 image tokens, 2-layer Qwen2 body with the real 151,668-token Qwen2.5 vocabulary)
on the same LLaVA-665K-shaped samples (benchmarks/corpus.py, packed by `lmmdata
pack`), projector + LM trainable (stage 2), AdamW, fp32 on CPU or bf16 autocast
on GPU. Each side makes one pass over all samples; we report real (non-pad)
tokens per second.

- ours: packed rows (`--batch-rows` per step), position ids restarting per sample,
  logits only at trained positions (`lmmtrain.step.loss_sum`).
- ours_full_logits: the same packed rows with transformers' own loss (logits at every
  position), to show how much of the gain is packing and how much the logits cut.
- baseline: `LlavaForConditionalGeneration`, one sample per row, right-padded to the
  longest in a batch of `--baseline-batch` samples (shuffled as a Trainer would),
  attention mask, labels -> transformers' loss.

The last line of output is one JSON object with `speedup` = ours / baseline.

    python benchmarks/train_step.py              # ~2.5 min on 2 CPU cores (--samples 64)
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

GOAL = 2.0


def make_shards(tmp: Path, samples: int, image_tokens: int) -> Path:
    from corpus import write_corpus, write_photos

    from lmmdata.pack import PackConfig, pack
    from lmmdata.stats import Stats

    root = write_photos(tmp / "data", n=16, size=80)
    corpus = write_corpus(tmp / "data" / "corpus.jsonl", samples, seed=0)
    cfg = PackConfig(inputs=[str(corpus)], out=str(tmp / "shards"), tokenizer="qwen2.5", image_root=str(root),
                     image_tokens=image_tokens, image_size=64)
    pack(cfg, Stats("pack", quiet=True))
    return tmp / "shards"


def models(tok, ids, device):
    from transformers import LlavaForConditionalGeneration

    from lmmtrain.config import Stage1Config
    from lmmtrain.model import build_model

    torch.manual_seed(0)
    ours = build_model(Stage1Config(preset="tiny", projector="vipllava", attn="sdpa"), tok, ids)
    torch.manual_seed(0)
    base = build_model(Stage1Config(preset="tiny", projector="mlp2x_gelu", attn="sdpa"), tok, ids)
    assert isinstance(base, LlavaForConditionalGeneration)
    for m in (ours, base):
        for p in m.model.vision_tower.parameters():
            p.requires_grad_(False)
    return ours.to(device).train(), base.to(device).train()


def samples_of(ds, image_id_start: int) -> list[dict]:
    """Split packed rows back into single samples (ids, labels, pixel_values)."""
    out = []
    for i in range(len(ds)):
        row = ds[i]
        start = img = 0
        for n in row["seq_lens"]:
            x = row["input_ids"][start:start + n]
            k = int((x == image_id_start).sum())
            out.append({"input_ids": x, "labels": row["labels"][start:start + n],
                        "pixel_values": row["pixel_values"][img:img + k] if k else None})
            start, img = start + n, img + k
    return out


def timed_pass(model, batches, step_fn, device, warmup: str) -> tuple[float, int, int]:
    """(seconds, real tokens, slots) for one pass of optimizer steps over `batches`.

    Warm-up (not timed, no optimizer step): `step` runs the first batch, `pass` every
    batch, so each shape has been seen once (allocator blocks, kernel choices), as
    in a long run after its first steps.
    """
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)
    for b in batches if warmup == "pass" else batches[:1]:
        step_fn(model, b, autocast)
        opt.zero_grad(set_to_none=True)
    real = slots = 0
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for b in batches:
        r, s = step_fn(model, b, autocast)
        opt.step()
        opt.zero_grad(set_to_none=True)
        real, slots = real + r, slots + s
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, real, slots


def ours_step(model, batch, autocast):
    from lmmtrain.step import loss_sum

    with autocast:
        loss, n = loss_sum(model, batch)
    (loss / max(n, 1)).backward()
    return batch["lmm_stats"]["real_tokens"], batch["lmm_stats"]["slots"]


def ours_full_logits_step(model, batch, autocast):
    with autocast:
        out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], labels=batch["labels"],
                    pixel_values=batch.get("pixel_values"), attention_mask=None, use_cache=False)
    out.loss.backward()
    return batch["lmm_stats"]["real_tokens"], batch["lmm_stats"]["slots"]


def baseline_step(model, batch, autocast):
    with autocast:
        out = model(**batch)
    out.loss.backward()
    return int(batch["attention_mask"].sum()), batch["attention_mask"].numel()


def pad_batch(items: list[dict], pad_id: int, device: str) -> dict:
    width = max(len(it["input_ids"]) for it in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), -100, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for i, it in enumerate(items):
        n = len(it["input_ids"])
        ids[i, :n], labels[i, :n], mask[i, :n] = it["input_ids"], it["labels"], 1
    batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
    pixels = [it["pixel_values"] for it in items if it["pixel_values"] is not None]
    if pixels:
        batch["pixel_values"] = torch.cat(pixels)
    return {k: v.to(device) for k, v in batch.items()}


def to_device(batch: dict, device: str) -> dict:
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--batch-rows", type=int, default=2, help="packed 2048-token rows per step (ours)")
    ap.add_argument("--baseline-batch", type=int, default=4, help="samples per step (baseline)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--warmup", choices=("step", "pass"), default=None,
                    help="untimed warm-up: first batch (CPU default) or a whole pass (GPU default)")
    args = ap.parse_args()
    warmup = args.warmup or ("pass" if args.device == "cuda" else "step")

    from lmmdata.shards import load_shard_tokenizer
    from lmmtrain.data import PackedCollator, ShardDataset, image_processor_for
    from lmmtrain.model import special_ids_of

    with tempfile.TemporaryDirectory() as tmp:
        shards = make_shards(Path(tmp), args.samples, image_tokens=16)
        tok = load_shard_tokenizer(shards)
        ids = special_ids_of(tok)
        ours, base = models(tok, ids, args.device)
        ds = ShardDataset([str(shards)], image_processor_for(None, ours.config.vision_config))
        collate = PackedCollator(tok.pad_token_id, "rows")
        rows = [ds[i] for i in range(len(ds))]
        packed = [to_device(collate(rows[i:i + args.batch_rows]), args.device) for i in range(0, len(rows), args.batch_rows)]
        single = samples_of(ds, ids["im_start"])
        random.Random(0).shuffle(single)
        padded = [pad_batch(single[i:i + args.baseline_batch], tok.pad_token_id, args.device)
                  for i in range(0, len(single), args.baseline_batch)]
        initial = {k: v.clone() for k, v in ours.state_dict().items()}
        results = {}
        for name, model, batches, fn in (("ours", ours, packed, ours_step),
                                         ("ours_full_logits", ours, packed, ours_full_logits_step),
                                         ("baseline", base, padded, baseline_step)):
            ours.load_state_dict(initial)
            secs, real, slots = timed_pass(model, batches, fn, args.device, warmup)
            results[name] = {"seconds": round(secs, 2), "real_tokens": real, "tokens_per_s": round(real / secs, 1),
                             "pad_share": round(1 - real / slots, 4), "steps": len(batches)}
            print(f"{name:17s} {real:,} real tokens in {secs:.1f} s = {real / secs:,.0f} tok/s, "
                  f"pad share {1 - real / slots:.1%}, {len(batches)} steps", flush=True)
    speedup = results["ours"]["tokens_per_s"] / results["baseline"]["tokens_per_s"]
    out = {"benchmark": "train_step", "device": args.device, "warmup": warmup, "samples": len(single), "rows": len(rows),
           **results,
           "speedup": round(speedup, 2),
           "speedup_packing_only": round(results["ours_full_logits"]["tokens_per_s"] / results["baseline"]["tokens_per_s"], 2),
           "goal": GOAL, "meets_goal": speedup >= GOAL}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
