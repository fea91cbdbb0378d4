"""Chat with a trained checkpoint: `generate(model, messages, images)` and the terminal loop.

Prompts are rendered with the same template code that packed the training
data (`lmmdata.template`), so `<image>` placeholders expand to exactly the
`<im_start>` N x `<image>` `<im_end>` spans the model was trained on. Images
may come with any turn, several at once, or not at all (pure text).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from lmmdata.template import ChatTemplate, make_template

from .messages import (ChatError, as_pil, check_image, check_turn, normalise,  # noqa: F401  (ChatError: part of this API)
                       with_placeholders)
from .model import image_tokens_of, load_checkpoint, special_ids_of


@dataclass
class ChatModel:
    """A checkpoint ready to chat: model, tokenizer, image processor and the training template."""

    model: Any
    tokenizer: Any
    image_processor: Any
    template: ChatTemplate
    end_ids: list[int]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def load_chat_model(path: str | os.PathLike, device: str | None = None, attn: str = "auto") -> ChatModel:
    """Load a checkpoint written by `lmmtrain` (model + tokenizer + processor + lmm_config.json)."""
    from transformers import AutoTokenizer

    from .data import image_processor_for
    from .stages import quiet_libraries, read_lmm_config

    quiet_libraries()
    info = read_lmm_config(str(path))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model = load_checkpoint(str(path), attn=attn, dtype=dtype).to(device).eval()
    tok = AutoTokenizer.from_pretrained(path)
    processor = image_processor_for(str(path), model.config.vision_config)
    ids = special_ids_of(tok)
    template = make_template(info["template"]["name"], tok, ids, image_tokens_of(model),
                             jinja=info["template"].get("chat_template"))
    ends = {info["special_tokens"].get("end_of_turn"), tok.eos_token_id}
    return ChatModel(model, tok, processor, template, sorted(i for i in ends if i is not None))


def pixel_values(chat: ChatModel, images: Sequence):
    """The images as the model's pixel tensor (its device and dtype), in placeholder order."""
    pixels = chat.image_processor(images=[as_pil(im) for im in images], return_tensors="pt")["pixel_values"]
    return pixels.to(chat.device, next(chat.model.parameters()).dtype)


@torch.no_grad()
def generate_ids(chat: ChatModel, messages: Sequence[dict], images: Sequence = (), max_new_tokens: int = 128,
                 do_sample: bool = False, min_new_tokens: int = 1, **generate_kwargs) -> tuple[list[int], list[int]]:
    """(prompt ids, generated ids) for the assistant's next answer (greedy by default)."""
    msgs = normalise(messages, len(images))
    ids, _, n = chat.template.encode(chat.template.render(msgs, add_generation_prompt=True))
    inputs: dict[str, Any] = {"input_ids": torch.tensor([ids], device=chat.device)}
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    if images:
        inputs["pixel_values"] = pixel_values(chat, images)
    out = chat.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=do_sample,
                              min_new_tokens=min_new_tokens, eos_token_id=chat.end_ids, pad_token_id=chat.tokenizer.pad_token_id, **generate_kwargs)
    return ids, out[0, len(ids):].tolist()


def generate(chat: ChatModel, messages: Sequence[dict], images: Sequence = (), max_new_tokens: int = 128,
             do_sample: bool = False, min_new_tokens: int = 1, **generate_kwargs) -> str:
    """The assistant's next answer to `messages`, with `images` in placeholder order (greedy by default)."""
    _, new = generate_ids(chat, messages, images, max_new_tokens, do_sample, min_new_tokens, **generate_kwargs)
    return chat.tokenizer.decode(new, skip_special_tokens=True).strip()


HELP = "commands: /image PATH (attach to your next message; repeatable), /reset, /quit"


def chat_loop(chat: ChatModel, images: Sequence[str] = (), prompts: Sequence[str] = (), system: str | None = None,
              max_new_tokens: int = 128) -> list[str]:
    """Multi-turn chat in the terminal. With `prompts`, answer them in turn (non-interactive) and return answers."""
    from rich.console import Console
    from rich.prompt import Prompt

    console = Console()  # the conversation goes to stdout

    history: list[dict] = [{"role": "system", "content": system}] if system else []
    all_images: list = []
    pending = list(images)
    answers = []
    queue = list(prompts)
    interactive = not prompts
    if interactive:
        console.print(f"[dim]{HELP}[/]")
    while True:
        if interactive:
            try:
                text = Prompt.ask(f"[bold cyan]you[/]{f' [{len(pending)} image(s)]' if pending else ''}", console=console)
            except (EOFError, KeyboardInterrupt):
                break
        elif queue:
            text = queue.pop(0)
            console.print(f"[bold cyan]you[/]{f' [{len(pending)} image(s)]' if pending else ''}: {text}", highlight=False)
        else:
            break
        if text.strip() in ("/quit", "/exit"):
            break
        if text.strip() == "/reset":
            history, all_images, pending = history[:1] if system else [], [], []
            continue
        try:
            if text.startswith("/image "):
                path = text.split(None, 1)[1].strip()
                check_image(path)  # refused now, not at the next message
                pending.append(path)
                continue
            check_turn(text, len(pending))
            turn_images = [as_pil(p) for p in pending]
        except ChatError as e:
            if not interactive:
                raise  # a scripted chat stops with the error (exit 1), it does not skip the turn
            console.print(f"[red]{e}[/]", highlight=False)
            continue
        content = with_placeholders(text, len(pending))
        history.append({"role": "user", "content": content})
        answer = generate(chat, history, all_images + turn_images, max_new_tokens=max_new_tokens)
        all_images += turn_images
        pending = []
        history.append({"role": "assistant", "content": answer})
        answers.append(answer)
        console.print(f"[bold green]assistant[/]: {answer}", highlight=False)
    return answers
