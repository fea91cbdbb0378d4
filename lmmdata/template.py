"""Chat templates: a LLaVA record -> token ids with images expanded and exact labels.

A conversation is rendered to `Piece`s: template glue (role headers, separators,
BOS), message text, and assistant answers (the answer text plus the template's
end-of-turn token). Each piece is tokenized on its own, so label boundaries are
exact by construction: `labels` equal `input_ids` on answer pieces and -100 on
everything else (system prompt, user turns, image tokens, glue). Message text is
tokenized with special-token parsing off, so a user who types `<|im_end|>` or
`<image>` gets plain text, never a control token.

Templates are built-ins (`chatml`/`qwen2`, `llama3`, `vicuna`) or the
tokenizer's own Jinja template (`auto`), which is split into pieces by
rendering growing prefixes of the conversation and diffing them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

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
                      bos="{bos}"),
}
BUILTINS["qwen2"] = BUILTINS["chatml"]
NAMES = ("auto", "chatml", "qwen2", "llama3", "vicuna")


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

    def _render_builtin(self, messages: Sequence[dict], add_generation_prompt: bool) -> list[Piece]:
        b = self.builtin
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
                cut = tail.index(eot) + len(eot)
                out += [Piece(m["content"], "answer"), Piece(tail[:cut], "end"), Piece(tail[cut:], "glue")]
            else:
                out += [Piece(m["content"], "text"), Piece(tail, "glue")]
        if add_generation_prompt:
            out.append(Piece(self._fill(b.assistant).split("{content}")[0], "glue"))
        return [p for p in out if p.text]

    def _render_jinja(self, messages: Sequence[dict], add_generation_prompt: bool) -> list[Piece]:
        # Render with sentinel contents so message text (which may contain anything, even the
        # template's own control strings) is never searched for in the rendered output.
        marks = [f"\x00lmm{i}\x00" for i in range(len(messages))]
        masked = [{"role": m["role"], "content": s} for m, s in zip(messages, marks)]

        def render(n: int, gen: bool = False) -> str:
            return self.tokenizer.apply_chat_template(masked[:n], tokenize=False, add_generation_prompt=gen,
                                                      chat_template=self.jinja)

        out: list[Piece] = []
        prev = ""
        for i, m in enumerate(messages):
            cur = render(i + 1)
            if not cur.startswith(prev) or cur.count(marks[i]) != 1:
                raise TemplateError(f"the tokenizer's chat template does not render turn {i} as a plain append; "
                                    f"use a built-in template (--template {'|'.join(NAMES[1:])})")
            delta, prev = cur[len(prev):], cur
            head, tail = delta.split(marks[i])
            out.append(Piece(head, "glue"))
            if m["role"] == "assistant":
                trained = tail.rstrip()
                out += [Piece(m["content"], "answer"), Piece(trained, "end"), Piece(tail[len(trained):], "glue")]
            else:
                out += [Piece(m["content"], "text"), Piece(tail, "glue")]
        if add_generation_prompt:
            out.append(Piece(render(len(messages), gen=True)[len(prev):], "glue"))
        return [p for p in out if p.text]

    # ---- encoding --------------------------------------------------------
    def encode(self, pieces: Sequence[Piece]) -> tuple[list[int], list[int], int]:
        """(input_ids, labels, n_images) with each `<image>` expanded to im_start + N x image + im_end."""
        return self.encode_many([pieces])[0]

    def encode_many(self, conversations: Sequence[Sequence[Piece]]) -> list[tuple[list[int], list[int], int]]:
        """`encode` for many conversations with two tokenizer calls in all (batched, multi-threaded)."""
        glue_texts: list[str] = []
        plain_texts: list[str] = []
        plans = []
        for pieces in conversations:
            plan: list[tuple[str, int, bool]] = []  # (source, index, trained); source "glue"|"text"|"image"
            for p in pieces:
                trained = p.kind in ("answer", "end")
                if p.kind in ("glue", "end"):
                    plan.append(("glue", len(glue_texts), trained))
                    glue_texts.append(p.text)
                    continue
                for j, part in enumerate(p.text.split(IMAGE)):
                    if j:
                        plan.append(("image", 0, False))
                    if part:
                        plan.append(("text", len(plain_texts), trained))
                        plain_texts.append(part)
            plans.append(plan)
        backend = self.tokenizer.backend_tokenizer
        glue = [e.ids for e in backend.encode_batch(glue_texts, add_special_tokens=False)] if glue_texts else []
        backend.encode_special_tokens = True
        try:
            plain = [e.ids for e in backend.encode_batch(plain_texts, add_special_tokens=False)] if plain_texts else []
        finally:
            backend.encode_special_tokens = False
        image = self.image_span()
        out = []
        for plan in plans:
            ids: list[int] = []
            labels: list[int] = []
            n_images = 0
            for source, i, trained in plan:
                if source == "image":
                    chunk = image
                    n_images += 1
                else:
                    chunk = glue[i] if source == "glue" else plain[i]
                ids += chunk
                labels += chunk if trained else [IGNORE] * len(chunk)
            out.append((ids, labels, n_images))
        return out

    def image_span(self) -> list[int]:
        ids = self.image_ids
        return [ids["im_start"], *[ids["image"]] * self.image_tokens, ids["im_end"]]


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
