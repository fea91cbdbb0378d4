"""A rule-following "translator" LM for tests, served by a real OpenAI-compatible server.

A random tiny model cannot translate, so tests of the server backend serve this
one instead: a real transformers model class (loaded with trust_remote_code by
`transformers serve`) whose next-token logits follow a rule over the user message
of the chat prompt. It copies the ids of the sentinels (`<x1/>` ...) and
white space and writes a Chinese character for every other token (chosen by the token's id), so the
answer passes the quality gate; a `mode` makes it misbehave the way LLM
translators do (drop or repeat a sentinel, add chatter, loop, answer in English).

The model sees only token ids; what it needs (the ids that open and close the
user message, the ids to keep, the ids of the chatter) is written into its
config by `build`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

MODES = ("good", "drop", "repeat", "chatter", "loop", "english")
HERE = Path(__file__).resolve().parent

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def build(out_dir: Path, qwen_dir: Path, mode: str = "good", max_sentinels: int = 40) -> Path:
    """Write a servable model directory (config, weights, tokenizer, modeling code) to `out_dir`."""
    import torch
    from transformers import AutoTokenizer

    assert mode in MODES, mode
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(qwen_dir)
    tok.chat_template = CHAT_TEMPLATE
    tok.eos_token = "<|im_end|>"
    tok.pad_token = "<|endoftext|>"
    tok.save_pretrained(out_dir)
    keep: set[int] = set()
    for k in range(1, max_sentinels + 1):
        for ctx in (f"<x{k}/>", f" <x{k}/>", f"a<x{k}/>b", f"a <x{k}/> b", f".<x{k}/>", f"<x{k}/>."):
            keep.update(tok.encode(ctx, add_special_tokens=False))
    keep -= set(tok.encode("a b", add_special_tokens=False))
    punct = {t for s in (" ", "\n", ".", ",", "?", "!", ":") for t in tok.encode(s, add_special_tokens=False)}
    keep |= punct
    ids = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    config = {
        # no "architectures": `transformers serve` then loads it with AutoModelForCausalLM (and the remote code)
        "model_type": "echo_translator",
        "auto_map": {"AutoConfig": "modeling_echo.EchoConfig", "AutoModelForCausalLM": "modeling_echo.EchoTranslator"},
        "vocab_size": len(tok), "mode": mode, "keep_ids": sorted(keep),
        "user_open": ids("<|im_start|>user\n"), "close_id": tok.convert_tokens_to_ids("<|im_end|>"),
        "zh_ids": [i[0] for i in map(ids, "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年") if len(i) == 1], "chatter_ids": ids("Here is the translation: "),
        "punct_ids": sorted(punct), "eos_token_id": tok.convert_tokens_to_ids("<|im_end|>"),
        "bos_token_id": None, "pad_token_id": tok.convert_tokens_to_ids("<|endoftext|>"),
        "max_position_embeddings": 32768, "hidden_size": 8, "num_hidden_layers": 1,
        "num_attention_heads": 1, "torch_dtype": "float32",
    }
    (out_dir / "config.json").write_text(json.dumps(config))
    (out_dir / "generation_config.json").write_text(json.dumps(
        {"eos_token_id": config["eos_token_id"], "pad_token_id": config["pad_token_id"], "do_sample": False}))
    shutil.copy(HERE / "modeling_echo.py", out_dir / "modeling_echo.py")
    from safetensors.torch import save_file

    save_file({"dummy": torch.zeros(1)}, str(out_dir / "model.safetensors"))
    return out_dir
