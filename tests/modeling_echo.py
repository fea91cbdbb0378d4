"""Modeling code of the test "translator" (see echo_lm.py); copied into the model directory it serves from."""

from __future__ import annotations

import torch
from torch import nn
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast


class EchoConfig(PretrainedConfig):
    model_type = "echo_translator"

    def __init__(self, vocab_size: int = 1, mode: str = "good", keep_ids=(), user_open=(), close_id: int = 0,
                 zh_ids=(), chatter_ids=(), punct_ids=(), **kw):
        self.vocab_size, self.mode, self.keep_ids = vocab_size, mode, list(keep_ids)
        self.user_open, self.close_id, self.zh_ids = list(user_open), close_id, list(zh_ids)
        self.chatter_ids, self.punct_ids = list(chatter_ids), list(punct_ids)
        super().__init__(**kw)


def _first(seq: list[int], sub: list[int]) -> int:
    """Index just after the first occurrence of `sub` in `seq`."""
    n = len(sub)
    return next(i + n for i in range(len(seq) - n + 1) if seq[i: i + n] == sub)


def _last(seq: list[int], sub: list[int]) -> int:
    """Index just after the last occurrence of `sub` in `seq` (-1 if none)."""
    n = len(sub)
    for i in range(len(seq) - n, -1, -1):
        if seq[i: i + n] == sub:
            return i + n
    return -1


class EchoTranslator(PreTrainedModel, GenerationMixin):
    config_class = EchoConfig
    _supports_cache_class = False

    def __init__(self, config: EchoConfig):
        super().__init__(config)
        self.dummy = nn.Parameter(torch.zeros(1))
        self.keep, self.punct = set(config.keep_ids), set(config.punct_ids)
        self.post_init()

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **kw):
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def target(self, source: list[int]) -> list[int]:
        c = self.config
        good = [t if t in self.keep else c.zh_ids[t % len(c.zh_ids)] for t in source]
        if c.mode == "good":
            return good
        if c.mode == "drop":  # every sentinel left out
            return [t for t in good if t not in self.keep or t in self.punct]
        if c.mode == "repeat":
            return good + good
        if c.mode == "chatter":
            return c.chatter_ids + good
        if c.mode == "english":
            return source
        if c.mode == "loop":
            return good[:1] * 100_000
        raise ValueError(c.mode)

    def forward(self, input_ids, attention_mask=None, **kw):
        c = self.config
        out = torch.full((input_ids.shape[0], 1, c.vocab_size), -1e4, dtype=torch.float32)
        for b, row in enumerate(input_ids.tolist()):
            if attention_mask is not None:
                row = [t for t, m in zip(row, attention_mask[b].tolist()) if m]
            start = _first(row, c.user_open)  # the text; later user turns are follow-ups
            end = row.index(c.close_id, start)
            source = row[start:end]
            done = row[end + 1:]
            # the generation prompt "\n<|im_start|>assistant\n" follows the user message: skip it
            opened = _last(done, self.config.user_open[:1])
            generated = done[opened + 2:] if opened >= 0 else []
            want = self.target(source)
            out[b, 0, want[len(generated)] if len(generated) < len(want) else c.close_id] = 0.0
        return CausalLMOutputWithPast(logits=out + self.dummy * 0)
