"""Translate throughput: our batched, deduplicated path vs naive per-string argostranslate.

Corpus: ~2,000 LLaVA-like records (questions drawn from templates with realistic
repetition, unique answers). Both paths use the same tiny random-weight en->zh
package (tests/tiny_argos.py), so the ratio measures the pipeline, not a model.
Ours runs `lmmdata translate` over the whole corpus with a fresh cache; the
naive path calls `argostranslate.translate.translate` once per string on a
random sample of the same strings (it is too slow for all of them), and its
rate is extrapolated. Last line: one JSON object with `speedup` (ours / naive).
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--naive-sample", type=int, default=300)
    args = ap.parse_args()
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
