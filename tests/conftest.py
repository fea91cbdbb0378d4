"""Shared fixtures: small LLaVA and text-only record files written per test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def llava(i: int, image: str | None = None, caption: str | None = None, **extra) -> dict:
    rec = {"id": f"r{i}"}
    if image is not None:
        rec["image"] = image
    q = "<image>\nDescribe the image briefly." if image is not None else f"Question {i}?"
    rec["conversations"] = [{"from": "human", "value": q},
                            {"from": "gpt", "value": caption or f"A photo number {i} of something."}]
    rec.update(extra)
    return rec


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture
def mm_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "mm.jsonl", [llava(i, f"img/{i}.jpg", keep=i) for i in range(40)])


@pytest.fixture
def alpaca_file(tmp_path: Path) -> Path:
    rows = [{"instruction": f"Say {i}", "input": "" if i % 2 else f"ctx {i}", "output": f"{i}!", "extra": i} for i in range(30)]
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return path
