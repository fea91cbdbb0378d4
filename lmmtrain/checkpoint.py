"""What an lmmtrain checkpoint directory holds, and how it is written: one place for every client's needs.

    OUT/config.json              VipLlava / Llava config: `image_seq_length` is the tower's real count; VipLlava
                                 also writes `vision_feature_layers` (transformers <= 5.19 reads that key and
                                 defaults to 5 feature layers without it; newer ones read `vision_feature_layer`)
    OUT/model.safetensors        the weights, the vision tower under `vision_tower.vision_model.` (the CLIP/SigLIP
                                 layout vLLM's Llava loads; transformers 5.24 reads it as well)
    OUT/generation_config.json   eos = [end-of-turn, eos]: a plain `generate()` stops at the end of the answer
    OUT/tokenizer.json ...       the shards' tokenizer, with <im_start> <image> <im_end>
    OUT/preprocessor_config.json the vision tower's image processor
    OUT/processor_config.json    LlavaProcessor: patch size, feature-select strategy, additional image tokens
    OUT/chat_template.jinja      the training template for string or list-of-parts messages; an image part
                                 renders as <im_start><image><im_end> + newline and the processor expands <image>
                                 to N, so AutoProcessor, pipeline() and vLLM build the ids the model trained on
    OUT/config.yaml              the resolved stage config
    OUT/lmm_config.json          lmmtrain's record (stage, template, data); written last: marks a finished stage
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lmmdata.records import IMAGE
from lmmdata.staging import staging_path, write_atomic
from lmmdata.template import IMAGE_TEXT, ChatTemplate
from lmmdata.tokenizer import keep_flags

VISION_PREFIX = "vision_tower."
VISION_LAYOUT = "vision_tower.vision_model."  # what vLLM's CLIP/SigLIP modules are named under


def _lit(s: str) -> str:
    """A Jinja string literal."""
    return json.dumps(s, ensure_ascii=False)


def _normalise_messages() -> str:
    """Jinja that rewrites `messages` to string content: list-of-parts messages (OpenAI / transformers style:
    {"type": "image"}, {"type": "text", "text": ...}) and `<image>` placeholders in strings both become the
    image text the model was trained on."""
    img, img_nl = _lit(IMAGE_TEXT), _lit(IMAGE_TEXT + "\n")
    return (
        "{%- set lmm = namespace(msgs=[]) -%}"
        "{%- for m in messages -%}"
        "{%- if m['content'] is string -%}"
        "{%- set lmm.msgs = lmm.msgs + [{'role': m['role'], 'content': m['content'] | replace(" + _lit(IMAGE) + ", "
        + img + ")}] -%}"
        "{%- else -%}"
        "{%- set part = namespace(text='') -%}"
        "{%- for p in m['content'] -%}"
        "{%- if p['type'] in ['image', 'image_url'] -%}{%- set part.text = part.text ~ " + img_nl + " -%}"
        "{%- elif p['type'] == 'text' -%}{%- set part.text = part.text ~ p['text'] -%}{%- endif -%}"
        "{%- endfor -%}"
        "{%- set lmm.msgs = lmm.msgs + [{'role': m['role'], 'content': part.text}] -%}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- set messages = lmm.msgs -%}"
    )


def _builtin_body(template: ChatTemplate) -> str:
    b = template.builtin
    assert b is not None
    fill = template._fill
    if b.name == "plain":  # the first user turn's images, then the first answer and eos
        return (
            "{{- " + _lit(fill("{bos}")) + " -}}"
            "{%- set seen = namespace(user=false, answer=false) -%}"
            "{%- for m in messages -%}"
            "{%- if m['role'] == 'user' and not seen.user -%}{%- set seen.user = true -%}"
            "{{- " + _lit(IMAGE_TEXT) + " * (m['content'].count(" + _lit(IMAGE_TEXT) + ")) -}}"
            "{%- elif m['role'] == 'assistant' and not seen.answer and not add_generation_prompt -%}"
            "{%- set seen.answer = true -%}{{- m['content'] ~ " + _lit(fill("{eos}")) + " -}}"
            "{%- endif -%}"
            "{%- endfor -%}"
        )
    heads = {r: fill(f).split("{content}") for r, f in (("system", b.system), ("user", b.user), ("assistant", b.assistant))}
    out = "{{- " + _lit(fill(b.bos)) + " -}}"
    if b.default_system:
        sh, st = heads["system"]
        out += ("{%- if not messages or messages[0]['role'] != 'system' -%}{{- "
                + _lit(sh + b.default_system + st) + " -}}{%- endif -%}")
    out += "{%- for m in messages -%}"
    for i, (role, (head, tail)) in enumerate(heads.items()):
        out += ("{%- if" if i == 0 else "{%- elif") + f" m['role'] == {_lit(role)} -%}}"
        out += "{{- " + _lit(head) + " ~ m['content'] ~ " + _lit(tail) + " -}}"
    out += "{%- endif -%}{%- endfor -%}"
    return out + "{%- if add_generation_prompt -%}{{- " + _lit(template.generation_prompt()) + " -}}{%- endif -%}"


def chat_template(template: ChatTemplate) -> str:
    """The Jinja chat template that renders exactly what `template` renders for training."""
    body = template.jinja if template.builtin is None else _builtin_body(template)
    return _normalise_messages() + (body or "")


def prepare_config(model, image_tokens: int) -> None:
    """Config values every client reads right (before the model is saved, on every rank)."""
    model.config.image_seq_length = image_tokens


def processor_for(model_config, tokenizer, image_processor, template: ChatTemplate):
    """A LlavaProcessor whose `<image>` expansion gives the tower's token count (CLIP: patches + CLS, minus the
    CLS that the `default` strategy drops; SigLIP: patches, minus the first one that VipLlava drops)."""
    from transformers import LlavaProcessor

    vc = model_config.vision_config
    clip = vc.model_type.startswith("clip")
    strategy = "default" if clip or model_config.model_type == "vipllava" else "full"
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=vc.patch_size,
                          vision_feature_select_strategy=strategy, num_additional_image_tokens=1 if clip else 0,
                          chat_template=chat_template(template), image_token=IMAGE)


def generation_config_for(model_config, tokenizer, special: dict[str, int]):
    from transformers import GenerationConfig

    ends = [i for i in (special.get("end_of_turn"), tokenizer.eos_token_id) if i is not None]
    return GenerationConfig(eos_token_id=list(dict.fromkeys(ends)), pad_token_id=special.get("pad"),
                            bos_token_id=tokenizer.bos_token_id)


def write_processor(out: Path, model_config, tokenizer, image_processor, template: ChatTemplate) -> None:
    """processor_config.json, chat_template.jinja, the tokenizer and the image processor (also on its own in
    preprocessor_config.json: transformers 5 nests it in processor_config.json, older readers do not look there)."""
    processor_for(model_config, tokenizer, image_processor, template).save_pretrained(out)
    image_processor.save_pretrained(out)
    keep_flags(tokenizer, out)


def write_client_files(out: Path, model_config, tokenizer, image_processor, template: ChatTemplate,
                       special: dict[str, int]) -> None:
    """After the model's own save (rank 0): processor, chat template, generation config, config keys, layout."""
    write_processor(out, model_config, tokenizer, image_processor, template)
    generation_config_for(model_config, tokenizer, special).save_pretrained(out)
    _both_feature_layer_keys(out / "config.json")
    _vision_layout(out)


def _both_feature_layer_keys(path: Path) -> None:
    config = json.loads(path.read_text(encoding="utf-8"))
    if config.get("model_type") == "vipllava" and "vision_feature_layer" in config:
        config["vision_feature_layers"] = config["vision_feature_layer"]
        _write_json(path, config)


def _vision_layout(out: Path) -> None:
    """Rename `vision_tower.X` to `vision_tower.vision_model.X` in every safetensors file (and the index)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    def renamed(key: str) -> str:
        if key.startswith(VISION_PREFIX) and not key.startswith(VISION_LAYOUT):
            return VISION_LAYOUT + key[len(VISION_PREFIX):]
        return key

    for path in sorted(out.glob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            if all(renamed(k) == k for k in f.keys()):
                continue
            tensors = {renamed(k): f.get_tensor(k) for k in f.keys()}
            metadata = f.metadata() or {"format": "pt"}
        tmp = staging_path(path)
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    index = out / "model.safetensors.index.json"
    if index.is_file():
        data = json.loads(index.read_text(encoding="utf-8"))
        data["weight_map"] = {renamed(k): v for k, v in data["weight_map"].items()}
        _write_json(index, data)


def _write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
