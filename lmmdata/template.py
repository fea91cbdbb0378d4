"""Chat templates: a LLaVA record -> token ids with images expanded and exact labels.

A conversation is rendered to `Piece`s: template glue (role headers, separators,
BOS), message text, and assistant answers (the answer text plus the template's
end-of-turn token). The pieces are joined into ONE string, `<image>` written as
`<im_start><image><im_end>`, and that string is tokenized in one call, exactly as
transformers' processors and serving engines tokenize a rendered prompt; each
`<image>` id is then expanded to N. Labels come from the character spans of the
trained pieces (answers and their end-of-turn token) through the tokenizer's
offsets, so they are exact whatever the tokenizer merges at piece boundaries
(SentencePiece's `▁`, byte-level BPE's leading spaces).

Message text is never parsed for control tokens: a record whose text contains a
template or image control string (`<|im_end|>`, `<im_start>`, ...) is encoded
piece by piece with special-token parsing off for its text, so it trains as the
plain text it is (such a prompt cannot be sent through a processor unchanged anyway).

Templates are built-ins (`chatml`/`qwen2`, `llama3`, `vicuna`, `plain`) or the
tokenizer's own Jinja template (`auto`), rendered once with a sentinel in place of
every message so the glue between messages is read off directly (linear in the
number of turns).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .records import IMAGE
from .tokenizer import IM_END, IM_START, IMAGE_TOKEN

IGNORE = -100
ROLE = {"system": "system", "human": "user", "gpt": "assistant", "user": "user", "assistant": "assistant"}


class TemplateError(ValueError):
    """A template cannot render this conversation or does not fit the tokenizer."""


@dataclass(frozen=True)
class Piece:
    text: str
    kind: str  # "glue" | "text" | "answer" | "end" (the trained end-of-turn glue after an answer)


@dataclass(frozen=True)
class Builtin:
    """A chat template as format strings; `{content}` is the message, `{bos}`/`{eos}` the tokenizer's."""

    name: str
    system: str
    user: str
    assistant: str
    end_of_turn: str  # the trained tail of `assistant` ends with this
    default_system: str | None = None
    bos: str = ""
    needs: tuple[str, ...] = ()  # special tokens the template's glue uses
    generation: str | None = None  # the generation prompt, when not the assistant header itself


BUILTINS = {
    "chatml": Builtin("chatml", "<|im_start|>system\n{content}<|im_end|>\n", "<|im_start|>user\n{content}<|im_end|>\n",
                      "<|im_start|>assistant\n{content}<|im_end|>\n", "<|im_end|>",
                      default_system="You are a helpful assistant.", needs=("<|im_start|>", "<|im_end|>")),
    "llama3": Builtin("llama3", "<|start_header_id|>system<|end_header_id|>\n\n{content}<|eot_id|>",
                      "<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|>",
                      "<|start_header_id|>assistant<|end_header_id|>\n\n{content}<|eot_id|>", "<|eot_id|>",
                      bos="<|begin_of_text|>",
                      needs=("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")),
    "vicuna": Builtin("vicuna", "{content} ", "USER: {content} ", "ASSISTANT: {content}{eos}", "{eos}",
                      default_system="A chat between a curious user and an artificial intelligence assistant. "
                                     "The assistant gives helpful, detailed, and polite answers to the user's questions.",
                      bos="{bos}", generation="ASSISTANT:"),  # as LLaVA: "▁4" is one token after "ASSISTANT:"
}
BUILTINS["qwen2"] = BUILTINS["chatml"]
# LLaVA-1.5's stage-1 (pretraining) format: the image, then the caption, then the end token; the question
# is dropped and only the caption is trained. Rendered by `_render_plain`.
BUILTINS["plain"] = Builtin("plain", "", "", "{content}{eos}", "{eos}", bos="{bos}")
NAMES = ("auto", "chatml", "qwen2", "llama3", "vicuna", "plain")
IMAGE_TEXT = IM_START + IMAGE_TOKEN + IM_END  # how an image stands in the rendered string (the processor expands it)


def messages_of(record: dict) -> list[dict]:
    """LLaVA turns as chat messages ({role, content}) with roles system/user/assistant."""
    return [{"role": ROLE[t["from"]], "content": t["value"]} for t in record["conversations"]]


@dataclass
class ChatTemplate:
    """A template bound to a tokenizer: renders messages to pieces and encodes them."""

    name: str
    tokenizer: object
    builtin: Builtin | None = None
    jinja: str | None = None
    image_ids: dict[str, int] = field(default_factory=dict)
    image_tokens: int = 0
    _filled: dict[str, str] = field(default_factory=dict, repr=False)  # format string -> with bos/eos filled in
    _control_re: re.Pattern | None = field(default=None, repr=False)
    _max_chars: int = field(default=0, repr=False)

    @property
    def max_token_chars(self) -> int:
        """Most characters one token can stand for (the longest vocabulary entry; byte-level entries count bytes,
        at least as many as the characters they decode to)."""
        if not self._max_chars:
            self._max_chars = max(map(len, self.tokenizer.get_vocab()), default=1)
        return self._max_chars

    # ---- rendering -------------------------------------------------------
    def render(self, messages: Sequence[dict], add_generation_prompt: bool = False) -> list[Piece]:
        """Pieces for `messages`; with `add_generation_prompt` the assistant header is appended."""
        if self.builtin is not None:
            return self._render_builtin(messages, add_generation_prompt)
        return self._render_jinja(messages, add_generation_prompt)

    def _fill(self, s: str) -> str:
        if s not in self._filled:
            tok = self.tokenizer
            self._filled[s] = s.replace("{bos}", tok.bos_token or "").replace("{eos}", tok.eos_token or "")
        return self._filled[s]

    def _render_plain(self, messages: Sequence[dict], add_generation_prompt: bool) -> list[Piece]:
        """Images of the first user turn, then the first answer (+ eos); questions and later turns are dropped."""
        users = [m for m in messages if m["role"] == "user"]
        images = users[0]["content"].count(IMAGE) if users else 0
        out = [Piece(self._fill("{bos}"), "glue")] + ([Piece(IMAGE * images, "text")] if images else [])
        answers = [m for m in messages if m["role"] == "assistant"]
        if answers and not add_generation_prompt:
            out += [Piece(answers[0]["content"], "answer"), Piece(self._fill("{eos}"), "end")]
        return [p for p in out if p.text]

    def _render_builtin(self, messages: Sequence[dict], add_generation_prompt: bool) -> list[Piece]:
        b = self.builtin
        if b.name == "plain":
            return self._render_plain(messages, add_generation_prompt)
        out: list[Piece] = [Piece(self._fill(b.bos), "glue")]
        msgs = list(messages)
        if (not msgs or msgs[0]["role"] != "system") and b.default_system:
            msgs.insert(0, {"role": "system", "content": b.default_system})
        eot = self._fill(b.end_of_turn)
        for m in msgs:
            fmt = self._fill({"system": b.system, "user": b.user, "assistant": b.assistant}[m["role"]])
            head, tail = fmt.split("{content}")
            out.append(Piece(head, "glue"))
            if m["role"] == "assistant":
                generated = self._generated_head(head)
                if generated:  # e.g. vicuna's space after "ASSISTANT:": the model writes it, so it is trained
                    out[-1] = Piece(head[: len(head) - len(generated)], "glue")
                    out.append(Piece(generated, "end"))
                cut = tail.index(eot) + len(eot)
                out += [Piece(m["content"], "answer"), Piece(tail[:cut], "end"), Piece(tail[cut:], "glue")]
            else:
                out += [Piece(m["content"], "text"), Piece(tail, "glue")]
        if add_generation_prompt:
            out.append(Piece(self.generation_prompt(), "glue"))
        return [p for p in out if p.text]

    def generation_prompt(self) -> str:
        """What a built-in template appends to ask for the next answer (the assistant header, or `generation`)."""
        b = self.builtin
        assert b is not None, "the tokenizer's own template renders its generation prompt itself"
        return self._fill(b.generation or b.assistant.split("{content}")[0])

    def _generated_head(self, head: str) -> str:
        """The part of an assistant header after the generation prompt (which the model itself produces)."""
        gen = self.generation_prompt()
        return head[len(gen):] if head.startswith(gen) else ""

    def _render_jinja(self, messages: Sequence[dict], add_generation_prompt: bool) -> list[Piece]:
        # Render once with a sentinel for every message: message text (which may contain anything, even
        # the template's own control strings) is never searched for in the output, and the glue between
        # messages is what lies between sentinels. The assistant's trained end is the glue up to and
        # including the end-of-turn token (the tokenizer's eos) that follows its answer.
        marks = [f"\x00lmm{i}\x00" for i in range(len(messages))]
        masked = [{"role": m["role"], "content": s} for m, s in zip(messages, marks)]
        try:
            text = self.tokenizer.apply_chat_template(masked, tokenize=False, add_generation_prompt=add_generation_prompt,
                                                      chat_template=self.jinja)
        except Exception as e:  # jinja raises its own errors (TemplateError, UndefinedError, raise_exception)
            raise TemplateError(f"the tokenizer's chat template cannot render this conversation: {e}") from None
        parts = re.split("(\x00lmm\\d+\x00)", text)
        if parts[1::2] != marks:
            raise TemplateError("the tokenizer's chat template drops, repeats or reorders messages; "
                                f"use a built-in template (--template {'|'.join(NAMES[1:])})")
        eot = self.tokenizer.eos_token or ""
        out: list[Piece] = [Piece(parts[0], "glue")]
        for i, m in enumerate(messages):
            after = parts[2 * i + 2]
            if m["role"] == "assistant" and not (add_generation_prompt and i == len(messages) - 1):
                cut = after.find(eot) if eot else -1
                if cut < 0:
                    raise TemplateError(f"the tokenizer's chat template does not end an assistant turn with its eos "
                                        f"token {eot!r}; use a built-in template (--template {'|'.join(NAMES[1:])})")
                cut += len(eot)
                out += [Piece(m["content"], "answer"), Piece(after[:cut], "end"), Piece(after[cut:], "glue")]
            else:
                out += [Piece(m["content"], "text"), Piece(after, "glue")]
        return [p for p in out if p.text]

    # ---- encoding --------------------------------------------------------
    def encode(self, pieces: Sequence[Piece]) -> tuple[list[int], list[int], int]:
        """(input_ids, labels, n_images) with each `<image>` expanded to im_start + N x image + im_end."""
        return self.encode_many([pieces])[0]

    def encode_many(self, conversations: Sequence[Sequence[Piece]]) -> list[tuple[list[int], list[int], int]]:
        """`encode` for many conversations in one batched tokenizer call."""
        strings: list[str] = []
        trained: list[np.ndarray] = []
        order: list[int | None] = []
        for pieces in conversations:
            if any(p.kind in ("text", "answer") and self._control.search(p.text.replace(IMAGE, "")) for p in pieces):
                order.append(None)  # control strings in message text: piece by piece, text kept plain
                continue
            text, spans = self._join(pieces)
            order.append(len(strings))
            strings.append(text)
            trained.append(spans)
        encs = self.tokenizer.backend_tokenizer.encode_batch(strings, add_special_tokens=False) if strings else []
        out = []
        for k, pieces in zip(order, conversations):
            if k is None:
                out.append(self._encode_piecewise(pieces))
                continue
            ids = np.asarray(encs[k].ids, dtype=np.int64)
            offsets = np.asarray(encs[k].offsets, dtype=np.int64).reshape(-1, 2)
            out.append(self._expand(ids, _overlaps(offsets, trained[k])))
        return out

    def _join(self, pieces: Sequence[Piece]) -> tuple[str, np.ndarray]:
        """The rendered string and the (start, end) character spans of its trained pieces."""
        parts: list[str] = []
        spans: list[tuple[int, int]] = []
        pos = 0
        for p in pieces:
            text = p.text.replace(IMAGE, IMAGE_TEXT) if p.kind in ("text", "answer") else p.text
            if p.kind in ("answer", "end") and text:
                if spans and spans[-1][1] == pos:
                    spans[-1] = (spans[-1][0], pos + len(text))
                else:
                    spans.append((pos, pos + len(text)))
            parts.append(text)
            pos += len(text)
        return "".join(parts), np.asarray(spans, dtype=np.int64).reshape(-1, 2)

    def _expand(self, ids: np.ndarray, trained: np.ndarray) -> tuple[list[int], list[int], int]:
        """Each `<image>` id -> N of them (untrained); labels = ids where trained, else IGNORE."""
        labels = np.where(trained, ids, IGNORE)
        image = self.image_ids["image"]
        where = np.flatnonzero(ids == image)
        if len(where) and self.image_tokens != 1:
            repeats = np.ones(len(ids), dtype=np.int64)
            repeats[where] = self.image_tokens
            ids, labels = np.repeat(ids, repeats), np.repeat(labels, repeats)
        return ids.tolist(), labels.tolist(), len(where)

    @property
    def _control(self) -> re.Pattern:
        """Added tokens (control strings) that message text must not turn into."""
        if self._control_re is None:
            added = sorted(self.tokenizer.get_added_vocab(), key=len, reverse=True)
            self._control_re = re.compile("|".join(map(re.escape, added)) or "(?!)")
        return self._control_re

    def _encode_piecewise(self, pieces: Sequence[Piece]) -> tuple[list[int], list[int], int]:
        """Each piece tokenized alone, message text with special-token parsing off (plain text)."""
        backend = self.tokenizer.backend_tokenizer
        ids: list[int] = []
        labels: list[int] = []
        n_images = 0

        def add(chunk: list[int], trained: bool) -> None:
            ids.extend(chunk)
            labels.extend(chunk if trained else [IGNORE] * len(chunk))

        for p in pieces:
            trained = p.kind in ("answer", "end")
            if p.kind in ("glue", "end"):
                add(backend.encode(p.text, add_special_tokens=False).ids, trained)
                continue
            for j, part in enumerate(p.text.split(IMAGE)):
                if j:
                    add(self.image_span(), False)
                    n_images += 1
                if part:
                    backend.encode_special_tokens = True
                    try:
                        add(backend.encode(part, add_special_tokens=False).ids, trained)
                    finally:
                        backend.encode_special_tokens = False
        return ids, labels, n_images

    def image_span(self) -> list[int]:
        ids = self.image_ids
        return [ids["im_start"], *[ids["image"]] * self.image_tokens, ids["im_end"]]


def _overlaps(offsets: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """Per token (start, end): does it overlap any of the sorted, disjoint character spans?"""
    if not len(spans) or not len(offsets):
        return np.zeros(len(offsets), dtype=bool)
    i = np.searchsorted(spans[:, 1], offsets[:, 0], side="right")  # first span ending after the token starts
    ok = i < len(spans)
    hit = np.zeros(len(offsets), dtype=bool)
    hit[ok] = spans[i[ok], 0] < offsets[ok, 1]
    return hit & (offsets[:, 1] > offsets[:, 0])


def make_template(name: str, tokenizer, image_ids: dict[str, int], image_tokens: int,
                  jinja: str | None = None) -> ChatTemplate:
    """Bind a named template (or the tokenizer's own, for "auto") to a tokenizer with image tokens added."""
    if name == "auto":
        jinja = jinja or getattr(tokenizer, "chat_template", None)
        if not jinja:
            raise TemplateError("the tokenizer has no chat template; choose one with --template "
                                f"{'|'.join(NAMES[1:])}")
        return ChatTemplate("auto", tokenizer, jinja=jinja, image_ids=image_ids, image_tokens=image_tokens)
    if name not in BUILTINS:
        raise TemplateError(f"unknown template {name!r}; choose one of {', '.join(NAMES)}")
    b = BUILTINS[name]
    vocab = tokenizer.get_vocab()
    missing = [t for t in b.needs if t not in vocab]
    if b.name == "vicuna" and not (tokenizer.eos_token and tokenizer.bos_token):
        missing.append("bos/eos token")
    if missing:
        raise TemplateError(f"template {name!r} needs token(s) the tokenizer lacks: {', '.join(missing)}")
    return ChatTemplate(name, tokenizer, builtin=b, image_ids=image_ids, image_tokens=image_tokens)


def special_tokens_for(template: ChatTemplate) -> dict[str, int]:
    """Ids the trainer must agree on: image tokens, pad and end-of-turn."""
    tok = template.tokenizer
    out = dict(template.image_ids)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out["pad"] = pad
    if template.builtin is not None:
        eot = template._fill(template.builtin.end_of_turn)
        out["end_of_turn"] = tok.convert_tokens_to_ids(eot)
    elif tok.eos_token_id is not None:
        out["end_of_turn"] = tok.eos_token_id
    return out


__all__ = ["IGNORE", "IMAGE_TOKEN", "IM_END", "IM_START", "ChatTemplate", "Piece", "TemplateError",
           "make_template", "messages_of", "special_tokens_for"]
