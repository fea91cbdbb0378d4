"""Build a tiny, random-weight en->zh Argos Translate package, offline.

The real argostranslate / CTranslate2 path needs a real package; none ships for
en->zh, so tests and benchmarks build one: a SentencePiece model trained on a
small mixed English/Chinese text, a 1-layer Marian model with random weights
converted by CTranslate2's own converter, argos `metadata.json`, and a blank
spaCy pipeline as the package's sentence splitter (argos' spaCy sentencizer is
rule-based and works offline). Translations are nonsense; structure is real.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

ENGLISH = (
    "What is in the image? Describe the picture briefly. The bus is white and red. "
    "A cat is sitting on the sofa. How many people are there? Two men are riding horses. "
    "What color is the car? Is there a dog in the photo? The sky is blue and clear. "
    "Please explain the scene in detail. A plate of food with rice and vegetables. "
)
CHINESE = "图片里有什么？请简要描述这张图片。公共汽车是白色和红色的。一只猫坐在沙发上。有几个人？天空很蓝。"


def build_package(out_dir: str | os.PathLike, vocab_size: int = 320, seed: int = 0, eos_bias: float = 0.3) -> Path:
    """Write `translate-en_zh-tiny.argosmodel` into out_dir and return its path."""
    import spacy

    out = Path(out_dir)
    work = out / "build"
    pkg = work / "translate-en_zh-tiny"
    if work.exists():
        shutil.rmtree(work)
    build_model_dir(pkg, vocab_size, seed, eos_bias)
    spacy.blank("en").to_disk(pkg / "spacy")
    (pkg / "metadata.json").write_text(json.dumps({
        "package_version": "0.0.1", "argos_version": "1.9.0", "from_code": "en", "from_name": "English",
        "to_code": "zh", "to_name": "Chinese", "type": "translate", "code": "translate-en_zh-tiny",
    }), encoding="utf-8")
    path = out / "translate-en_zh-tiny.argosmodel"
    with zipfile.ZipFile(path, "w") as z:
        for f in sorted(pkg.rglob("*")):
            z.write(f, f.relative_to(work))
    shutil.rmtree(work)
    return path


TINY = {"d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
        "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "max_position_embeddings": 256}


def build_model_dir(pkg: Path, vocab_size: int = 320, seed: int = 0, eos_bias: float = 0.3,
                    shape: dict | None = None, vocab_total: int | None = None) -> Path:
    """The package's CTranslate2 model in `pkg/model` and its `pkg/sentencepiece.model` (no spaCy needed).

    `shape` overrides the tiny Marian dimensions (benchmarks build an OPUS-MT-sized one);
    `vocab_total` pads the model's vocabulary with extra pieces to that size."""
    import sentencepiece as spm
    import torch
    from ctranslate2.converters import TransformersConverter
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    work = pkg.parent / f"{pkg.name}.work"
    work.mkdir(parents=True)
    corpus = work / "corpus.txt"
    words = ENGLISH.split()
    lines = [" ".join(words[i: i + 9]) for i in range(0, len(words), 3)] + [CHINESE[i: i + 12] for i in range(0, len(CHINESE), 4)]
    corpus.write_text("\n".join(lines * 20), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(work / "sp"), vocab_size=vocab_size,
                                   character_coverage=1.0, model_type="unigram", minloglevel=2,
                                   hard_vocab_limit=False, bos_id=-1, eos_id=1, unk_id=0, pad_id=-1)
    sp = spm.SentencePieceProcessor(model_file=str(work / "sp.model"))
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    vocab = {p: i for i, p in enumerate(pieces)}
    for i in range((vocab_total or 0) - 1 - len(vocab)):
        vocab[f"▁x{i}"] = len(vocab)
    vocab["<pad>"] = len(vocab)  # Marian: pad last
    hf = work / "hf"
    hf.mkdir()
    (hf / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    shutil.copy(work / "sp.model", hf / "source.spm")
    shutil.copy(work / "sp.model", hf / "target.spm")
    tok = MarianTokenizer(str(hf / "source.spm"), str(hf / "target.spm"), str(hf / "vocab.json"),
                          unk_token="<unk>", eos_token="</s>", pad_token="<pad>")
    tok.save_pretrained(hf)
    torch.manual_seed(seed)
    cfg = MarianConfig(vocab_size=len(vocab), **{**TINY, **(shape or {})}, pad_token_id=vocab["<pad>"],
                       eos_token_id=vocab["</s>"], decoder_start_token_id=vocab["<pad>"],
                       forced_eos_token_id=vocab["</s>"])
    model = MarianMTModel(cfg)
    with torch.no_grad():  # random weights never stop; make </s> likely enough for short outputs
        model.final_logits_bias[0, vocab["</s>"]] = eos_bias
    model.save_pretrained(hf)
    TransformersConverter(str(hf)).convert(str(pkg / "model"), force=True)
    shutil.copy(work / "sp.model", pkg / "sentencepiece.model")
    shutil.rmtree(work)
    return pkg / "model"


def argos_env(home: str | os.PathLike) -> dict[str, str]:
    """Environment that points argostranslate at a private, offline home.

    The spaCy sentencizer is selected (ARGOS_CHUNK_TYPE=SPACY) and its cache is
    pre-seeded with a blank pipeline so argos never tries to download one.
    """
    import spacy

    home = Path(home)
    cache = home / "cache" / "argos-translate" / "spacy"
    if not (cache / "senter" / "model").exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        spacy.blank("en").to_disk(cache)
        (cache / "senter" / "model").mkdir(parents=True, exist_ok=True)
    return {
        "XDG_DATA_HOME": str(home / "data"), "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_CACHE_HOME": str(home / "cache"), "ARGOS_PACKAGES_DIR": str(home / "data" / "argos-translate" / "packages"),
        "ARGOS_CHUNK_TYPE": "SPACY", "ARGOS_DEVICE_TYPE": "cpu", "HF_HUB_OFFLINE": "1",
    }


if __name__ == "__main__":
    import sys

    print(build_package(sys.argv[1] if len(sys.argv) > 1 else "."))
