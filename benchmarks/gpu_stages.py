"""Stage 1 and stage 2 throughput with real model shapes: real tokens/s and MFU per stage.

Builds a LLaVA-665K-shaped corpus (benchmarks/corpus.py), packs it at the preset's
image-token count with the real Qwen2.5 tokenizer, then runs `stage1` and `stage2`
(stage 2 from the stage-1 output) for `--steps` optimizer steps each through the
same code as `lmmtrain stage1/stage2`: bf16 when the GPU supports it, attention
`--attn` (auto = flash-attention 2 when flash-attn is installed, else SDPA with a
block-diagonal mask), optional DeepSpeed. The `bench` preset has CLIP ViT-L/14-336
+ Qwen2.5-0.5B shapes with random weights, so nothing is downloaded.

tokens/s and MFU are the trainer's own logged figures for the last logging window
(`--log-every` steps), so start-up and the first steps are not counted. The last
line of output is one JSON object.

    python benchmarks/gpu_stages.py                                   # GPU: bench preset, 30 steps per stage
    python benchmarks/gpu_stages.py --deepspeed pipelines/deepspeed/zero2.json
    python benchmarks/gpu_stages.py --preset tiny --samples 200 --steps 4 --log-every 2   # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def make_shards(tmp: Path, samples: int, image_tokens: int, image_size: int) -> tuple[Path, dict]:
    from corpus import write_corpus, write_photos

    from lmmdata.pack import PackConfig, pack
    from lmmdata.stats import Stats

    root = write_photos(tmp / "data", n=16, size=max(96, image_size))
    corpus = write_corpus(tmp / "data" / "corpus.jsonl", samples, seed=0)
    manifest = pack(PackConfig(inputs=[str(corpus)], out=str(tmp / "shards"), tokenizer="qwen2.5",
                               image_root=str(root), image_tokens=image_tokens), Stats("pack", quiet=True))
    return tmp / "shards", manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="bench", help="tiny | small | bench [bench]")
    ap.add_argument("--samples", type=int, default=3000, help="corpus size (enough rows for the steps asked)")
    ap.add_argument("--steps", type=int, default=30, help="optimizer steps per stage")
    ap.add_argument("--batch-rows", type=int, default=4)
    ap.add_argument("--log-every", type=int, default=10, help="logging window; the figures are the last window's")
    ap.add_argument("--attn", default="auto", help="auto | flash_attention_2 | sdpa | eager")
    ap.add_argument("--deepspeed", default=None, help="a DeepSpeed JSON, e.g. pipelines/deepspeed/zero2.json")
    ap.add_argument("--gradient-checkpointing", action="store_true", help="in stage 2")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--out", default=None, help="keep shards and checkpoints here (default: a temp dir)")
    args = ap.parse_args()

    import torch

    from lmmtrain.config import Stage1Config, Stage2Config
    from lmmtrain.model import PRESETS, _config_from_dict, image_tokens_for
    from lmmtrain.stages import run_stage

    vision = _config_from_dict(PRESETS[args.preset]["vision"])
    n_tokens = image_tokens_for(vision)
    with tempfile.TemporaryDirectory(prefix="lmm-gpu-stages-") as tmp_dir:
        tmp = Path(args.out or tmp_dir)
        t0 = time.perf_counter()
        shards, manifest = make_shards(tmp, args.samples, n_tokens, vision.image_size)
        pack_s = time.perf_counter() - t0
        common = dict(data=[str(shards)], preset=args.preset, max_steps=args.steps, batch_rows=args.batch_rows,
                      logging_steps=args.log_every, save_steps=10**9, attn=args.attn, deepspeed=args.deepspeed,
                      workers=args.workers)
        s1 = run_stage(Stage1Config(out=str(tmp / "stage1"), **common))
        s2 = run_stage(Stage2Config(out=str(tmp / "stage2"), init=str(tmp / "stage1"),
                                    gradient_checkpointing=args.gradient_checkpointing, **common))

    keys = ("tokens_per_s", "mfu", "pad_share", "image_token_share", "first_loss", "last_loss", "seconds", "attn",
            "layout")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(json.dumps({
        "device": device, "preset": args.preset, "image_tokens": n_tokens, "rows": manifest["rows"],
        "pack_real_token_fraction": manifest["packing"]["real_token_fraction"], "pack_seconds": round(pack_s, 1),
        "batch_rows": args.batch_rows, "steps": args.steps, "deepspeed": args.deepspeed,
        "torch": torch.__version__,
        "stage1": {k: s1.get(k) for k in keys}, "stage2": {k: s2.get(k) for k in keys},
    }))


if __name__ == "__main__":
    main()
