"""Peak RSS and time of `lmmdata pack` on hostile inputs, each against the same corpus without them (one run).

- a 5 MB JSON line (one answer of 5 million characters),
- the largest image the pixel budget allows (8000 x 8000 = 64 MP, PNG), next to a 20,000 x 19,999 header (skipped),
- a record of 10,000 turns (the tokenizer's own chat template; was quadratic: ~17 min).

Each pack runs in its own process, so its peak RSS is its own. The last line is one JSON object.

    python benchmarks/pack_hostile.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def run_pack(inputs: list[Path], out: Path, root: Path) -> dict:
    """(seconds, peak RSS MB, skipped) of one `lmmdata pack` process."""
    code = ("import sys, json, resource; from lmmdata.pack import PackConfig, pack; from lmmdata.stats import Stats;"
            "s = Stats('pack', quiet=True);"
            f"m = pack(PackConfig(inputs={[str(p) for p in inputs]!r}, out={str(out)!r}, tokenizer='qwen2.5',"
            f" image_root={str(root)!r}, image_tokens=576, template='auto'), s);"
            "print(json.dumps({'skipped': m['skipped'], 'samples': m['samples'],"
            " 'rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=str(Path(__file__).resolve().parent.parent))
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    out_json = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"seconds": round(time.perf_counter() - t0, 2), "peak_rss_mb": round(out_json["rss_mb"], 1),
            "samples": out_json["samples"], "skipped": out_json["skipped"]}


def main() -> None:
    from PIL import Image

    from corpus import write_corpus, write_photos
    from hostile import png_claiming

    with tempfile.TemporaryDirectory(prefix="lmm-hostile-") as tmp:
        tmp = Path(tmp)
        root = write_photos(tmp / "data", n=16, size=96)
        base = write_corpus(tmp / "data" / "corpus.jsonl", 2000, seed=0)
        rec = lambda i, **kw: json.dumps({"id": f"h{i}", **kw})  # noqa: E731
        long_line = tmp / "data" / "long.jsonl"
        long_line.write_text(rec(0, conversations=[{"from": "human", "value": "Tell me everything."},
                                                   {"from": "gpt", "value": "word " * 1_000_000}]) + "\n")
        big = tmp / "data" / "big.jsonl"
        Image.new("RGB", (8000, 8000), (120, 30, 200)).save(root / "big.png")
        (root / "bomb.png").write_bytes(png_claiming(20_000, 19_999))
        conv = [{"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": "A purple square."}]
        big.write_text(rec(1, image="big.png", conversations=conv) + "\n" + rec(2, image="bomb.png", conversations=conv) + "\n")
        turns = tmp / "data" / "turns.jsonl"
        many = []
        for i in range(5000):
            many += [{"from": "human", "value": f"Question {i}?"}, {"from": "gpt", "value": f"Answer {i}."}]
        turns.write_text(rec(3, conversations=many) + "\n")
        runs = {name: run_pack(inputs, tmp / f"out-{name}", root) for name, inputs in (
            ("baseline", [base]), ("with_5mb_line", [base, long_line]), ("with_64mp_image", [base, big]),
            ("with_10000_turns", [base, turns]))}
    b = runs["baseline"]
    result = {"benchmark": "pack_hostile", "corpus_samples": 2000, **runs,
              "rss_ratio_5mb_line": round(runs["with_5mb_line"]["peak_rss_mb"] / b["peak_rss_mb"], 3),
              "rss_ratio_64mp_image": round(runs["with_64mp_image"]["peak_rss_mb"] / b["peak_rss_mb"], 3),
              "extra_seconds_10000_turns": round(runs["with_10000_turns"]["seconds"] - b["seconds"], 2)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
