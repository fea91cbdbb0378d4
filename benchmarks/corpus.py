"""A synthetic corpus shaped like LLaVA-665K (mix, turns, answer lengths, image counts).

Shares follow the released mix (llava_v1_5_mix665k.json: LLaVA-Instruct 158K,
VQAv2 83K, GQA 72K, OKVQA/A-OKVQA 59K, OCR-VQA 80K, TextCaps 22K, RefCOCO 48K,
VG 86K, ShareGPT text-only 41K) plus 2 % two-image records, since this toolkit
packs interleaved multi-image data. Turn counts and question/answer lengths (in
words; ~1 Qwen token each) are rough per-source shapes: short-answer VQA sources
merged into multi-turn conversations per image, long free-form answers for
LLaVA-Instruct, long text-only ShareGPT conversations. Written streaming, so a
200k-record corpus costs no memory.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

WORDS = ("the a of and to in is on with that this for it as at by from are be or an was can there its "
         "image photo man woman dog cat car bus street table people sign building water sky tree red blue "
         "white black green small large left right front behind color many two three what where which how "
         "why does do picture shows standing sitting holding looking next near top bottom side wearing "
         "person group room window road field grass food plate train plane boat horse bird clock kitchen "
         "answer question single word phrase describe detail brief region text title author book genre").split()
PROMPT_VQA = "Answer the question using a single word or phrase."
# (share, name, turns (lo, hi), question words, answer words, images)
SOURCES = [
    (0.087, "llava_conv", (2, 8), (8, 25), (30, 150), 1),
    (0.035, "llava_detail", (1, 1), (10, 16), (100, 250), 1),
    (0.116, "llava_reason", (1, 1), (20, 40), (80, 250), 1),
    (0.125, "vqav2", (1, 10), (6, 14), (1, 3), 1),
    (0.108, "gqa", (1, 15), (6, 14), (1, 3), 1),
    (0.089, "okvqa", (1, 3), (10, 40), (1, 10), 1),
    (0.120, "ocrvqa", (5, 10), (6, 12), (2, 12), 1),
    (0.033, "textcaps", (1, 1), (8, 14), (10, 30), 1),
    (0.072, "refcoco", (3, 10), (10, 20), (10, 30), 1),
    (0.133, "vg", (3, 15), (8, 16), (5, 20), 1),
    (0.020, "compare", (1, 3), (10, 30), (30, 120), 2),
    (0.062, "sharegpt", None, None, None, 0),
]


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(max(1, n))).capitalize() + "."


def record(i: int, rng: random.Random, n_photos: int) -> dict:
    r = rng.random() * sum(s[0] for s in SOURCES)
    for share, name, turns, q, a, n_img in SOURCES:
        r -= share
        if r <= 0:
            break
    conv = []
    if name == "sharegpt":  # long text-only chats: total length log-normal, median ~500 words
        total = min(1900, int(math.exp(rng.gauss(6.2, 0.8))))
        k = rng.randint(1, 4)
        for _ in range(k):
            conv += [{"from": "human", "value": _words(rng, total // (5 * k))},
                     {"from": "gpt", "value": _words(rng, 4 * total // (5 * k))}]
        return {"id": f"{name}-{i}", "conversations": conv}
    for t in range(rng.randint(*turns)):
        question = _words(rng, rng.randint(*q)).rstrip(".") + "?"
        if name in ("vqav2", "gqa", "ocrvqa"):
            question += "\n" + PROMPT_VQA
        if t == 0:
            question = "\n".join(["<image>"] * n_img + [question])
        conv += [{"from": "human", "value": question}, {"from": "gpt", "value": _words(rng, rng.randint(*a))}]
    images = [f"p{rng.randrange(n_photos)}.jpg" for _ in range(n_img)]
    return {"id": f"{name}-{i}", "image": images[0] if n_img == 1 else images, "conversations": conv}


def write_corpus(path: Path, n: int, seed: int = 0, n_photos: int = 16) -> Path:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps(record(i, rng, n_photos), ensure_ascii=False) + "\n")
    return path


def write_photos(root: Path, n: int = 16, size: int = 48) -> Path:
    """Small real JPEGs (smooth gradients + noise); pack verifies and copies them."""
    import numpy as np
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        base = np.stack([(xx * (i + 1)) % 256, (yy * 3 + i * 20) % 256, ((xx + yy) * 2) % 256], -1)
        arr = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(arr, "RGB").save(root / f"p{i}.jpg", quality=90)
    return root
