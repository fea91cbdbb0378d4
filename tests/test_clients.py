"""A stage-2 checkpoint works as it is in transformers' own clients: AutoProcessor, pipeline("image-text-to-text"),
AutoModelForImageTextToText + plain generate(), and holds the files and keys vLLM reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import N, small

QWEN_IM_END = 151645


@pytest.fixture(scope="session", params=["vipllava", "mlp2x_gelu"])
def memo_checkpoint(request, memo_shards, tmp_path_factory) -> Path:
    """Stage 1 + 60 steps of stage 2 on four captions: the model answers "This is the ... photo." and stops."""
    from lmmtrain.config import Stage1Config, Stage2Config
    from lmmtrain.stages import train_stage

    root = tmp_path_factory.mktemp(f"memo-{request.param}")
    train_stage(small(Stage1Config, data=[str(memo_shards)], out=str(root / "s1"), max_steps=3, projector=request.param))
    train_stage(small(Stage2Config, data=[str(memo_shards)], out=str(root / "s2"), init=str(root / "s1"), max_steps=60,
                      lr=1e-2, warmup_ratio=0.0, scheduler="constant", batch_rows=1, logging_steps=20))
    return root / "s2"


def photos(sample_data, *names) -> list[Image.Image]:
    return [Image.open(sample_data.parent / "images" / f"{n}.jpg").convert("RGB") for n in names]


CHATS = {  # (images, user text as lmmtrain chat takes it)
    "one image": (["coffee"], "What is this?"),
    "two images": (["coffee", "rocket"], "What is this?"),
    "text only": ([], "What is this?"),
}


def as_parts(n_images: int, text: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": text}]}]


def test_checkpoint_holds_what_clients_read(memo_checkpoint):
    from safetensors import safe_open

    config = json.loads((memo_checkpoint / "config.json").read_text())
    assert config["image_seq_length"] == N
    if config["model_type"] == "vipllava":
        assert config["vision_feature_layer"] == config["vision_feature_layers"] == -2  # both transformers 5.x keys
    with safe_open(str(memo_checkpoint / "model.safetensors"), "pt") as f:
        vision = [k for k in f.keys() if "vision_tower" in k]
    assert vision and all(k.startswith("vision_tower.vision_model.") for k in vision)  # vLLM's CLIP layout
    gen = json.loads((memo_checkpoint / "generation_config.json").read_text())
    assert QWEN_IM_END in (gen["eos_token_id"] if isinstance(gen["eos_token_id"], list) else [gen["eos_token_id"]])
    proc = json.loads((memo_checkpoint / "processor_config.json").read_text())
    assert (proc["patch_size"], proc["num_additional_image_tokens"], proc["vision_feature_select_strategy"]) == (16, 1, "default")
    assert (memo_checkpoint / "chat_template.jinja").is_file() and (memo_checkpoint / "preprocessor_config.json").is_file()


def test_plain_generate_stops_at_end_of_turn_with_lmmtrain_chats_answer(memo_checkpoint, sample_data):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from lmmtrain.chat import generate, load_chat_model

    model = AutoModelForImageTextToText.from_pretrained(memo_checkpoint).eval()
    proc = AutoProcessor.from_pretrained(memo_checkpoint)
    chat = load_chat_model(memo_checkpoint, device="cpu")
    for case, (names, text) in CHATS.items():
        images = photos(sample_data, *names)
        prompt = proc.apply_chat_template(as_parts(len(images), text), add_generation_prompt=True)
        inputs = proc(images=images or None, text=prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=40, do_sample=False)  # no eos given: generation_config's
        new = out[0, inputs["input_ids"].shape[1]:].tolist()
        ours = generate(chat, [{"role": "user", "content": text}], images, max_new_tokens=40)
        assert new[-1] == QWEN_IM_END and len(new) < 40, (case, proc.decode(new))
        assert proc.decode(new, skip_special_tokens=True).strip() == ours, case
    assert "photo" in ours  # the memorised answer, ended by <|im_end|>


def test_pipeline_answers_equal_lmmtrain_chat(memo_checkpoint, sample_data):
    from transformers import pipeline

    from lmmtrain.chat import generate, load_chat_model

    pipe = pipeline("image-text-to-text", model=str(memo_checkpoint), device="cpu")
    chat = load_chat_model(memo_checkpoint, device="cpu")
    for case, (names, text) in CHATS.items():
        images = photos(sample_data, *names)
        messages = [{"role": "user", "content": [{"type": "image", "image": im} for im in images]
                     + [{"type": "text", "text": text}]}]
        got = pipe(text=messages, max_new_tokens=12, do_sample=False, return_full_text=False)[0]["generated_text"]
        assert got.strip() == generate(chat, [{"role": "user", "content": text}], images, max_new_tokens=12), case
