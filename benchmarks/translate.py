"""Translate throughput: our batched, deduplicated path vs naive per-string argostranslate.

Corpus: ~2,000 LLaVA-like records (questions drawn from templates with realistic
repetition, unique answers). Both paths use the same tiny random-weight en->zh
package (tests/tiny_argos.py), so the ratio measures the pipeline, not a model.
Ours runs `lmmdata translate` over the whole corpus with a fresh cache; the
naive path calls `argostranslate.translate.translate` once per string on a
random sample of the same strings (it is too slow for all of them), and its
rate is extrapolated. Last line: one JSON object with `speedup` (ours / naive).

`--server`: the LLM backend against a local `transformers serve` (continuous
batching) serving a tiny random Qwen2 with the real Qwen2.5 vocabulary:
strings/s at `--concurrency 1` and at the default, in one run; a plain
concurrent client (a thread pool posting the same requests) as the baseline
the client must stay within 10 % of; and the share of strings served from the
cache on a second pass.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from tiny_argos import argos_env, build_package  # noqa: E402

QUESTIONS = ["What is in the image?", "Describe the image briefly.", "What color is the {o}?", "How many {o}s are there?",
             "Is there a {o} in the picture?", "What is the {o} doing?", "Where is the {o}?", "Describe the scene in detail."]
OBJECTS = ["bus", "cat", "dog", "man", "car", "horse", "plate", "sky", "tree", "woman"]


def corpus(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        turns = []
        for t in range(rng.choice([1, 1, 2, 3])):
            q = rng.choice(QUESTIONS).format(o=rng.choice(OBJECTS))
            turns += [{"from": "human", "value": ("<image>\n" if t == 0 else "") + q},
                      {"from": "gpt", "value": f"The {rng.choice(OBJECTS)} number {i}-{t} is {rng.choice(['red', 'white', 'small', 'near the tree'])}."}]
        rows.append({"id": str(i), "image": f"coco/{i}.jpg", "conversations": turns})
    return rows


def start_server(tmp: Path, port: int):
    """A tiny random Qwen2 (real Qwen2.5 vocabulary) behind `transformers serve --continuous-batching`."""
    import subprocess

    import httpx
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from lmmdata.tokenizer import build_qwen25
    from echo_lm import CHAT_TEMPLATE

    tok = AutoTokenizer.from_pretrained(build_qwen25(tmp / "qwen"))
    tok.chat_template, tok.eos_token, tok.pad_token = CHAT_TEMPLATE, "<|im_end|>", "<|endoftext|>"
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    model_dir = tmp / "tiny-qwen2"
    Qwen2ForCausalLM(cfg).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    serve = str(Path(sys.executable).parent / "transformers")
    proc = subprocess.Popen([serve, "serve", str(model_dir), "--continuous-batching", "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc, str(model_dir)
        except httpx.HTTPError:
            time.sleep(0.5)
    raise SystemExit("transformers serve did not start")


def plain_client(url: str, model: str, texts: list[str], concurrency: int) -> float:
    """Requests/s of a bare thread pool posting the same chat completions (the server's own pace)."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from lmmdata.backends.openai import DEFAULT_PROMPT, LANG_NAMES, fill

    system = fill(DEFAULT_PROMPT["system"], src_lang=LANG_NAMES["en"], tgt_lang=LANG_NAMES["zh"])
    client = httpx.Client(timeout=300, limits=httpx.Limits(max_connections=concurrency + 8))

    def one(text: str) -> None:
        body = {"model": model, "messages": [{"role": "system", "content": system}, {"role": "user", "content": text}],
                "temperature": 0.0, "max_tokens": min(4096, 2 * len(text) + 64)}
        client.post(url + "/chat/completions", json=body).raise_for_status()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, texts))
    return len(texts) / (time.perf_counter() - t0)


def server_mode(args) -> None:
    import signal
    import socket

    from lmmdata.protect import LATIN, compile_patterns, segment, with_sentinels
    from lmmdata.stats import Stats
    from lmmdata.translate import TranslateConfig, translate_file

    tmp = Path(tempfile.mkdtemp(prefix="bench-translate-server-"))
    os.environ["LMM_CACHE"] = str(tmp / "lmm-cache")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc, model = start_server(tmp, port)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        rows = corpus(args.records)
        src = tmp / "in.jsonl"
        src.write_text("".join(json.dumps(r) + "\n" for r in rows))
        pattern = compile_patterns()
        units = list(dict.fromkeys(p.text for r in rows for t in r["conversations"]
                                   for p in with_sentinels(segment(t["value"], pattern, LATIN)) if p.translate))
        plain_client(url, model, units[:16], args.concurrency)  # warm up

        def ours(concurrency: int, cache: str, name: str) -> tuple[float, Stats]:
            cfg = TranslateConfig(inp=str(src), out=str(tmp / name), cache=str(tmp / cache), backend="openai",
                                  base_url=[url], model=model, concurrency=concurrency, retries=0)
            t0 = time.perf_counter()
            stats = translate_file(cfg, Stats("translate", quiet=True))
            return stats.counts["translated"] / (time.perf_counter() - t0), stats

        one_rate, _ = ours(1, "c1", "o1.jsonl")
        many_rate, _ = ours(args.concurrency, "c2", "o2.jsonl")
        plain_rate = plain_client(url, model, units, args.concurrency)
        _, second = ours(args.concurrency, "c2", "o3.jsonl")
        distinct = second.counts["strings"] - second.counts["dedup_hits"]
        result = {
            "records": len(rows), "strings": second.counts["strings"], "distinct_requests": len(units),
            "concurrency": args.concurrency, "c1_strings_per_s": round(one_rate, 1),
            "strings_per_s": round(many_rate, 1), "plain_client_strings_per_s": round(plain_rate, 1),
            "concurrency_speedup": round(many_rate / one_rate, 2), "vs_plain_client": round(many_rate / plain_rate, 3),
            "goal_vs_plain_client": ">= 0.9", "second_pass_cache_hit_share": round(second.counts["cache_hits"] / max(1, distinct), 3),
            "second_pass_translated": second.counts["translated"], "cpu_count": os.cpu_count(),
        }
        print(json.dumps(result))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--naive-sample", type=int, default=300)
    ap.add_argument("--server", action="store_true", help="benchmark the LLM backend against a local server")
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args()
    if args.server:
        server_mode(args)
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench-translate-"))
    os.environ.update(argos_env(tmp / "home"))
    pkg = build_package(tmp / "pkg")

    import argostranslate.package
    import argostranslate.translate

    from lmmdata.protect import compile_patterns, segment
    from lmmdata.stats import Stats
    from lmmdata.translate import TranslateConfig, translate_file

    argostranslate.package.install_from_path(pkg)
    rows = corpus(args.records)
    src = tmp / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pattern = compile_patterns()
    strings = [p.text for r in rows for t in r["conversations"] for p in segment(t["value"], pattern) if p.translate]

    sample = random.Random(1).sample(strings, min(args.naive_sample, len(strings)))
    argostranslate.translate.translate("warm up", "en", "zh")
    t0 = time.perf_counter()
    for s in sample:
        argostranslate.translate.translate(s, "en", "zh")
    naive_rate = len(sample) / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    stats = translate_file(TranslateConfig(inp=str(src), out=str(tmp / "out.jsonl"), cache=str(tmp / "cache")),
                           Stats("translate", quiet=True))
    ours_s = time.perf_counter() - t0
    ours_rate = len(strings) / ours_s
    result = {
        "records": len(rows), "strings": len(strings), "unique_strings": len(set(strings)),
        "ours_strings_per_s": round(ours_rate, 1), "ours_seconds": round(ours_s, 2),
        "naive_strings_per_s": round(naive_rate, 1), "naive_sample": len(sample),
        "translated_by_model": stats.counts["translated"], "cpu_count": os.cpu_count(),
        "speedup": round(ours_rate / naive_rate, 2), "goal": ">= 10",
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
