"""CTranslate2 on a GPU vs the CPU: `--backend ct2 --device cuda` throughput, in one run.

First the test package (tests/tiny_argos.py's model directory): our `Ct2Backend`
translates the distinct strings of benchmarks/translate.py's LLaVA-like corpus
on all CPU cores and on CUDA (the model's own float32, then float16): strings/s.
Then a realistic model size: the same builder makes a random-weight Marian of
OPUS-MT en-zh's shape (6+6 layers, d_model 512, 8 heads, FFN 2048, vocabulary
padded with extra pieces to 65,001), converted by CTranslate2's own converter; it times `translate_batch` on a
fixed workload (`--sentences` sentences of 24 source tokens, every output forced
to exactly 32 tokens, beam 4 like the backend) on the CPU (all cores) and on
CUDA in each compute type. Then runs our `Ct2Backend` on a few LLaVA strings on
both devices and reports how many outputs agree (the model's own float32 on both). Last line:
one JSON object; `speedup` is the best CUDA rate over the CPU rate.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from tiny_argos import build_model_dir
from translate import corpus


OPUS_MT = {"d_model": 512, "encoder_layers": 6, "decoder_layers": 6, "encoder_attention_heads": 8,
           "decoder_attention_heads": 8, "encoder_ffn_dim": 2048, "decoder_ffn_dim": 2048, "max_position_embeddings": 512}


def model_with_tokenizer(pkg: Path, **kw) -> Path:
    """tiny_argos's model directory with its SentencePiece model beside model.bin, as `--backend ct2` wants."""
    model = build_model_dir(pkg, **kw)
    shutil.copy(pkg / "sentencepiece.model", model / "sentencepiece.model")
    return model


def rate(model: Path, device: str, compute_type: str, batch: list[list[str]], out_len: int) -> float:
    """Output tokens per second over the whole batch, after one warm-up call."""
    import ctranslate2

    if device == "cpu":
        tr = ctranslate2.Translator(str(model), device="cpu", inter_threads=1, intra_threads=os.cpu_count() or 1,
                                    compute_type=compute_type)
    else:
        tr = ctranslate2.Translator(str(model), device="cuda", compute_type=compute_type)
    kw = {"beam_size": 4, "max_batch_size": 4096, "batch_type": "tokens", "min_decoding_length": out_len,
          "max_decoding_length": out_len}
    tr.translate_batch(batch[:64], **kw)
    t = time.perf_counter()
    res = tr.translate_batch(batch, **kw)
    dt = time.perf_counter() - t
    return sum(len(r.hypotheses[0]) for r in res) / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=2000, help="corpus records for the test-package run")
    ap.add_argument("--sentences", type=int, default=1024)
    ap.add_argument("--cpu-sentences", type=int, default=128, help="the CPU is timed on fewer (its rate is per token)")
    args = ap.parse_args()
    import ctranslate2

    from lmmdata.backends.ct2 import load_cublas
    from lmmdata.config import ConfigError

    result: dict = {"ctranslate2": ctranslate2.__version__, "cuda_devices": ctranslate2.get_cuda_device_count(),
                    "cpu_cores": os.cpu_count()}
    if result["cuda_devices"]:
        try:
            load_cublas()
        except ConfigError as e:  # what `lmmdata translate --device cuda` says here; nothing to measure on CUDA
            print(json.dumps({**result, "cuda_error": str(e)}))
            return
    with tempfile.TemporaryDirectory() as tmp:
        strings = sorted({t["value"] for r in corpus(args.records) for t in r["conversations"]})
        result["test_package"] = test_package_rates(Path(tmp) / "pkg", strings, bool(result["cuda_devices"]))
        t = time.perf_counter()
        model = model_with_tokenizer(Path(tmp) / "opus", eos_bias=0.0, shape=OPUS_MT, vocab_total=65001)
        result["build_s"] = round(time.perf_counter() - t, 1)
        rng = random.Random(0)
        pieces = [f"▁x{i}" for i in range(60000)]
        batch = [[rng.choice(pieces) for _ in range(24)] for _ in range(args.sentences)]
        result["cpu_tokens_per_s"] = round(rate(model, "cpu", "default", batch[:args.cpu_sentences], 32), 1)
        if result["cuda_devices"]:
            try:
                cuda_checks(model, batch, result)
            except (RuntimeError, OSError, ConfigError) as e:  # a CUDA failure is the result: say it in the JSON
                result["cuda_error"] = f"{type(e).__name__}: {e}"[:300]
    print(json.dumps(result))


def test_package_rates(pkg: Path, strings: list[str], cuda: bool) -> dict:
    """Ct2Backend strings/s on the test package's model: CPU, then CUDA in float32 and float16."""
    from lmmdata.backends.ct2 import Ct2Backend

    model = model_with_tokenizer(pkg)
    out: dict = {"strings": len(strings)}
    runs = [("cpu", "default")] + ([("cuda", "default"), ("cuda", "float16")] if cuda else [])
    for device, ct in runs:
        backend = Ct2Backend(str(model), device=device, compute_type=ct)
        backend.translate_batch(strings[:64])  # warm-up: load, first kernels
        t = time.perf_counter()
        backend.translate_batch(strings)
        out[f"{device}_{'float32' if ct == 'default' else ct}_strings_per_s"] = round(len(strings) / (time.perf_counter() - t), 1)
    if cuda:
        out["speedup"] = round(max(v for k, v in out.items() if k.startswith("cuda_")) / out["cpu_float32_strings_per_s"], 2)
    return out


def cuda_checks(model: Path, batch: list[list[str]], result: dict) -> None:
    import ctranslate2

    from lmmdata.backends.ct2 import Ct2Backend

    gpu = Ct2Backend(str(model), device="cuda")  # first: on a machine without cuBLAS 12 its message is the result
    types = sorted(ctranslate2.get_supported_compute_types("cuda"))
    result["cuda_compute_types"] = types
    for ct in ("float32", "float16", "bfloat16", "int8_float16"):
        if ct in types:
            result[f"cuda_{ct}_tokens_per_s"] = round(rate(model, "cuda", ct, batch, 32), 1)
    best = max(v for k, v in result.items() if k.startswith("cuda_") and k.endswith("_tokens_per_s"))
    result["speedup"] = round(best / result["cpu_tokens_per_s"], 2)
    texts = ["What is in the image?", "The bus is white and red. Two men are riding horses.",
             "A cat is sitting on the sofa.", "How many people are there?"] * 4
    cpu_out = Ct2Backend(str(model), device="cpu").translate_batch(texts)
    gpu_out = gpu.translate_batch(texts)
    result["backend_cuda_agrees"] = f"{sum(a == b for a, b in zip(cpu_out, gpu_out))}/{len(texts)}"


if __name__ == "__main__":
    main()
