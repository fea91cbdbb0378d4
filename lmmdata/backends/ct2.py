"""`--backend ct2`: any CTranslate2 translation model directory, on the CPU or a CUDA GPU.

A directory made by `ct2-transformers-converter` (e.g. OPUS-MT en-zh, with
`--copy_files source.spm target.spm` or the tokenizer files) holds `model.bin`
plus either SentencePiece models (`source.spm`/`target.spm`, or one
`sentencepiece.model` as in argos packages) or a transformers tokenizer. Every
sentence of a batch goes through one `translate_batch` call (token-budget
batches); a sentence longer than the model's position table is cut into pieces
translated alone (the table's length is learnt from CTranslate2's error).
`Ct2Runner` is shared with the argos backend, which adds argos' own tokenizer
and sentence splitter.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Callable

from ..config import ConfigError

SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")


def check_device(device: str) -> None:
    """Fail clearly when CTranslate2 cannot use `device`."""
    if device == "cpu":
        return
    if device != "cuda":
        raise ConfigError(f"--device {device}: use cpu or cuda")
    import ctranslate2

    if ctranslate2.get_cuda_device_count() == 0:
        raise ConfigError("--device cuda: CTranslate2 sees no CUDA device (no GPU here, or a driver/CUDA 12 "
                          "runtime it cannot load); use --device cpu")
    load_cublas()


def check_compute_type(device: str, compute_type: str) -> None:
    """Fail now, not at the first batch, on a precision CTranslate2 cannot run on `device`."""
    import ctranslate2

    supported = ctranslate2.get_supported_compute_types(device)
    if compute_type not in ("default", "auto") and compute_type not in supported:
        raise ConfigError(f"--compute-type {compute_type}: not supported on {device} here "
                          f"(supported: {', '.join(sorted(supported))}, default, auto)")


def load_cublas(dirs: list[Path] | None = None) -> None:
    """Make the cuBLAS that CTranslate2 4.x opens by name (libcublas.so.12) loadable, or fail clearly now.

    CTranslate2's wheels carry the CUDA runtime but open cuBLAS 12 at the first
    translation. A machine whose torch is built for CUDA 13 has only libcublas.so.13,
    and the run would fail on its first batch; `pip install nvidia-cublas-cu12` puts
    the library in site-packages, where no loader looks: load it from there first.
    """
    import ctypes
    import site

    names = ("libcublasLt.so.12", "libcublas.so.12")
    if dirs is None:
        dirs = [Path(p) / "nvidia" / "cublas" / "lib" for p in [*site.getsitepackages(), site.getusersitepackages()]]
    for name in names:
        for candidate in [name, *(str(d / name) for d in dirs if (d / name).is_file())]:
            try:
                ctypes.CDLL(candidate, mode=ctypes.RTLD_GLOBAL)
                break
            except OSError:
                continue
        else:
            raise ConfigError(f"--device cuda: CTranslate2 needs CUDA 12's cuBLAS ({name}) and this machine has "
                              "none (a CUDA 13 setup has libcublas.so.13 only); `pip install nvidia-cublas-cu12` "
                              "(it is found in site-packages) or put its lib directory on LD_LIBRARY_PATH")


def model_digest(model_dir: Path) -> str:
    """A short content hash of `model.bin` (part of the cache key: a retrained model is a new model)."""
    h = hashlib.sha256()
    with open(model_dir / "model.bin", "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()[:16]


class Ct2Runner:
    """Sentences -> CTranslate2 -> text, for whatever tokenizer and sentence splitter the model comes with."""

    def __init__(self, model_dir: Path, encode: Callable[[str], list[str]], decode: Callable[[list[str]], str],
                 split: Callable[[str], list[str]], device: str = "cpu", workers: int | None = None,
                 beam_size: int = 4, target_prefix: str | None = None, max_batch_tokens: int = 4096,
                 length_penalty: float = 0.2, compute_type: str = "default"):
        check_device(device)
        check_compute_type(device, compute_type)
        self.model_dir, self.encode, self.decode, self.split = Path(model_dir), encode, decode, split
        self.device, self.workers, self.beam_size = device, workers, beam_size
        self.target_prefix, self.max_batch_tokens, self.length_penalty = target_prefix, max_batch_tokens, length_penalty
        self.compute_type = compute_type
        self.max_tokens = 510  # tokens per piece; lowered to the model's own limit the first time it is exceeded
        self._translator = None

    def _load(self) -> None:
        import ctranslate2

        if self.device == "cuda":
            self._translator = ctranslate2.Translator(str(self.model_dir), device="cuda", compute_type=self.compute_type)
            return
        cores = os.cpu_count() or 1
        inter = max(1, min(self.workers or cores, cores))
        self._translator = ctranslate2.Translator(str(self.model_dir), device="cpu", inter_threads=inter,
                                                  intra_threads=max(1, cores // inter), compute_type=self.compute_type)

    def _pieces(self, tokens: list[str]) -> list[list[str]]:
        n = self.max_tokens
        return [tokens[k:k + n] for k in range(0, len(tokens), n)] or [tokens]

    def translate_batch(self, texts: list[str]) -> list[str]:
        if not texts:
            return []
        if self._translator is None:
            self._load()
        # each text -> sentences -> pieces of at most `max_tokens` tokens (a "sentence" can be any length: a
        # long code line, an unbroken string); pieces are translated alone and joined back in order
        groups = [[piece for s in self.split(t) for piece in self._pieces(self.encode(s))] for t in texts]
        tokens = [piece for g in groups for piece in g]
        prefix = [[self.target_prefix]] * len(tokens) if self.target_prefix else None
        try:
            results = self._translator.translate_batch(
                tokens, target_prefix=prefix, replace_unknowns=True, max_batch_size=self.max_batch_tokens,
                batch_type="tokens", beam_size=self.beam_size, num_hypotheses=1, length_penalty=self.length_penalty)
        except RuntimeError as e:  # the model's position table is shorter than a piece: learn its length, retry
            limit = re.search(r"positions >= (\d+)", str(e))
            if not limit or self.max_tokens <= int(limit.group(1)) - 2:
                raise
            self.max_tokens = int(limit.group(1)) - 2
            return self.translate_batch(texts)
        out, i = [], 0
        for g in groups:
            toks = [t for r in results[i: i + len(g)] for t in r.hypotheses[0]]
            i += len(g)
            value = self.decode(toks)
            if self.target_prefix and value.startswith(self.target_prefix):
                value = value[len(self.target_prefix):]
            out.append(value[1:] if value.startswith(" ") else value)
        return out


def _tokenizer_for(model_dir: Path) -> tuple[Callable[[str], list[str]], Callable[[list[str]], str]]:
    """encode/decode from the SentencePiece models or transformers tokenizer beside `model.bin`."""
    src = next((model_dir / n for n in ("source.spm", "sentencepiece.model", "spm.model") if (model_dir / n).is_file()), None)
    if src is not None:
        import sentencepiece as spm

        tgt = model_dir / "target.spm" if (model_dir / "target.spm").is_file() else src
        sp_src, sp_tgt = spm.SentencePieceProcessor(model_file=str(src)), spm.SentencePieceProcessor(model_file=str(tgt))
        return (lambda s: sp_src.encode(s, out_type=str)), \
            (lambda toks: sp_tgt.decode_pieces([t for t in toks if t not in ("</s>", "<pad>")]))
    if (model_dir / "tokenizer_config.json").is_file() or (model_dir / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(model_dir))
        return (lambda s: tok.convert_ids_to_tokens(tok.encode(s))), \
            (lambda toks: tok.decode(tok.convert_tokens_to_ids(toks), skip_special_tokens=True))
    raise ConfigError(f"--model {model_dir}: no tokenizer beside model.bin (want source.spm [+ target.spm], "
                      "sentencepiece.model, or a transformers tokenizer); convert with "
                      "`ct2-transformers-converter --model NAME --output_dir DIR --copy_files source.spm target.spm`")


class Ct2Backend:
    """A CTranslate2 model directory with its own tokenizer; sentences split at . ! ? followed by space."""

    sentinels = False

    def __init__(self, model_dir: str, device: str = "cpu", workers: int | None = None, beam_size: int = 4,
                 target_prefix: str | None = None, compute_type: str = "default"):
        d = Path(model_dir).expanduser()
        if not (d / "model.bin").is_file():
            raise ConfigError(f"--model {model_dir}: not a CTranslate2 model directory (no model.bin); convert one "
                              "with `ct2-transformers-converter --model Helsinki-NLP/opus-mt-en-zh --output_dir DIR "
                              "--copy_files source.spm target.spm`")
        encode, decode = _tokenizer_for(d)
        self.id = f"ct2:{model_digest(d)}:beam{beam_size}:{target_prefix or ''}"
        self.runner = Ct2Runner(d, encode, decode, lambda t: SENTENCE_END.split(t), device, workers, beam_size,
                                target_prefix, compute_type=compute_type)

    def translate_batch(self, texts: list[str]) -> list[str]:
        return self.runner.translate_batch(texts)
