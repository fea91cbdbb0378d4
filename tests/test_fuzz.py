"""Random and hostile records through translate, mix-text, make-negatives and pack (seeded, so reproducible):
no traceback, exit code 0, every valid record kept, every bad one counted with a reason."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import N
from hostile import png_claiming
from tiny_argos import argos_env, build_package

LMMDATA = str(Path(sys.executable).parent / "lmmdata")
TEXT = ["What is in the image?", "Describe it.", "图片里有什么？", "emoji 😀🐱 and RTL שלום", "combining é and zero\u200bwidth",
        "tabs\tand\nnewlines", "<|im_end|> <im_start> control strings in text", "```code``` http://x.org/a", "x" * 300]


def valid(rng: random.Random, i: int, images: list[str]) -> dict:
    rec = {"id": f"v{i}", "conversations": []}
    n_img = rng.choice([0, 1, 1, 2]) if images else 0
    if n_img:
        rec["image"] = images[0] if n_img == 1 else rng.sample(images, 2)
    if rng.random() < 0.2:
        rec["conversations"].append({"from": "system", "value": rng.choice(TEXT)})
    for t in range(rng.randint(1, 3)):
        q = rng.choice(TEXT)
        if t == 0 and n_img:
            q = "<image>\n" * n_img + q
        rec["conversations"] += [{"from": "human", "value": q},
                                 {"from": "gpt", "value": rng.choice(TEXT[:6]) + f" Answer {i}-{t}, long enough."}]
    return rec


# every structural problem: each command skips these, with its own reason
STRUCTURAL = {
    "malformed_json": '{"id": "m", "conversations": [',
    "not_an_object": "[1, 2, 3]",
    "missing_conversations": '{"id": "nc"}',
    "wrong_type": '{"id": "wt", "conversations": "hello"}',
    "empty_conversation": '{"id": "ec", "conversations": []}',
    "unknown_role": '{"id": "ur", "conversations": [{"from": "robot", "value": "x"}, {"from": "gpt", "value": "y"}]}',
    "empty_turn": '{"id": "et", "conversations": [{"from": "human", "value": "  "}, {"from": "gpt", "value": "y"}]}',
    "bad_turn_order": '{"id": "bo", "conversations": [{"from": "gpt", "value": "y"}]}',
    "placeholder_in_answer": '{"id": "pa", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "<image> y"}]}',
    "placeholder_mismatch": '{"id": "pm", "image": ["a.jpg", "b.jpg"], "conversations": [{"from": "human", "value": "<image> q"}, {"from": "gpt", "value": "y"}]}',
    "bad_unicode": '{"id": "bu", "conversations": [{"from": "human", "value": "broken \\ud800 text?"}, {"from": "gpt", "value": "y"}]}',
    "too_deep": '{"id": "td", "conversations": ' + "[" * 50_000 + "]" * 50_000 + "}",
    "bad_image_field": '{"id": "bi", "image": 7, "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "y"}]}',
}
# records that only `pack` refuses (it is the step that opens the images)
IMAGES = {
    "bad_image_path": "a\u0000b.jpg",
    "image_outside_root": "../outside.jpg",
    "missing_image": "nope.jpg",
    "corrupt_image": "corrupt.jpg",
    "image_too_large": "bomb.png",
}


def corpus(tmp_path: Path, sample_data: Path, seed: int) -> tuple[Path, int, dict[str, int], dict[str, int]]:
    """(jsonl file, valid count, structural reasons -> count, image reasons -> count)."""
    rng = random.Random(seed)
    photos = sorted(p.name for p in (sample_data.parent / "images").glob("*.jpg"))[:4]
    root = tmp_path / "imgs"
    root.mkdir()
    for name in photos:
        (root / name).write_bytes((sample_data.parent / "images" / name).read_bytes())
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (root / "bomb.png").write_bytes(png_claiming(20_000, 19_999))
    lines, n_valid, structural, image = [], 0, {}, {}
    for i in range(240):
        r = rng.random()
        if r < 0.55:
            lines.append(json.dumps(valid(rng, i, photos), ensure_ascii=rng.random() < 0.5))
            n_valid += 1
        elif r < 0.8:
            reason = rng.choice(sorted(STRUCTURAL))
            lines.append(STRUCTURAL[reason])
            structural[reason] = structural.get(reason, 0) + 1
        else:
            reason = rng.choice(sorted(IMAGES))
            lines.append(json.dumps({"id": f"i{i}", "image": IMAGES[reason], "conversations": [
                {"from": "human", "value": "<image>\n" + rng.choice(TEXT)},
                {"from": "gpt", "value": f"A long enough answer {i}."}]}))
            image[reason] = image.get(reason, 0) + 1
    src = root / "fuzz.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return src, n_valid, structural, image


def lmmdata(*args, env=None):
    proc = subprocess.run([LMMDATA, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200", **(env or {})}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc


def summary(out: Path) -> dict:
    return yaml.safe_load(Path(f"{out}.config.yaml").read_text())["summary"]


def rejects(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in path.read_text().splitlines():
        counts[json.loads(line)["reason"]] = counts.get(json.loads(line)["reason"], 0) + 1
    return counts


@pytest.fixture(scope="module")
def argos_pkg(tmp_path_factory):
    return build_package(tmp_path_factory.mktemp("argos-fuzz"))


@pytest.mark.parametrize("seed", [0, 1])
def test_fuzzed_records_through_every_data_command(seed, sample_data, qwen_dir, argos_pkg, tmp_path):
    src, n_valid, structural, image = corpus(tmp_path, sample_data, seed)
    kept = n_valid + sum(image.values())  # records whose images only pack opens
    assert structural and image and n_valid > 100

    out = tmp_path / "zh.jsonl"
    env = argos_env(tmp_path / "home")
    lmmdata("translate", src, "-o", out, "--package", argos_pkg, "--cache", tmp_path / "cache",
            "--rejects", tmp_path / "t.rejects.jsonl", env=env)
    s = summary(out)
    assert s["written"] == kept and s["skipped"] == structural == rejects(tmp_path / "t.rejects.jsonl")

    text = tmp_path / "text.jsonl"
    text.write_text("".join(json.dumps({"instruction": f"Say {i} 😀", "output": f"{i}!"}) + "\n" for i in range(50)))
    mixed = tmp_path / "mixed.jsonl"
    lmmdata("mix-text", src, text, "-o", mixed, "--ratio", "0.2", "--rejects", tmp_path / "m.rejects.jsonl")
    s = summary(mixed)
    assert s["read_mm"] == 240 and s["skipped"] == structural == rejects(tmp_path / "m.rejects.jsonl")
    assert sum(1 for line in mixed.read_text().splitlines() if json.loads(line)["id"].startswith("v")) == n_valid

    neg = tmp_path / "neg.jsonl"
    lmmdata("make-negatives", src, "-o", neg, "--any-first-answer", "--rejects", tmp_path / "n.rejects.jsonl")
    s = summary(neg)
    assert s["skipped"] == structural == rejects(tmp_path / "n.rejects.jsonl")
    ids = [json.loads(line)["id"] for line in neg.read_text().splitlines()]
    assert sum(1 for i in ids if str(i).startswith("v")) >= n_valid  # every valid input record is kept

    shards = tmp_path / "shards"
    lmmdata("pack", src, "-o", shards, "--tokenizer", qwen_dir, "--image-root", src.parent, "--image-tokens", str(N),
            "--rejects", tmp_path / "p.rejects.jsonl")
    manifest = json.loads((shards / "manifest.json").read_text())
    assert manifest["samples"] == n_valid
    assert manifest["skipped"] == {**structural, **image} == rejects(tmp_path / "p.rejects.jsonl")
