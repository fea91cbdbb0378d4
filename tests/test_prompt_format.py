"""One prompt format from `pack` to serving: the ids pack writes are the ids of the whole rendered conversation
tokenized in one call, the ids transformers' AutoProcessor + apply_chat_template builds from the checkpoint's
files, and (vicuna) the ids of LLaVA-1.5's own `preprocess_v1` with its image token expanded the same way."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import N
from lmmdata.template import IGNORE, make_template, messages_of
from lmmdata.tokenizer import add_image_tokens, load_tokenizer

TURNS = {
    "one image": [("human", "<image>\nWhat is in the picture?"), ("gpt", "A cat sitting on a red sofa.")],
    "two images": [("human", "<image>\n<image>\nCompare the two photos."), ("gpt", "The first one is brighter.")],
    "text only": [("human", "Say hello in Chinese."), ("gpt", "你好")],
    "multi-turn": [("human", "<image>\nDescribe the image briefly."), ("gpt", "A window next to a sofa."),
                   ("human", "Which one is brighter?"), ("gpt", "The window.")],
    "system": [("system", "You answer in one word."), ("human", "<image>\nColour?"), ("gpt", "Red.")],
}


def rec_of(turns) -> dict:
    return {"id": "r", "conversations": [{"from": f, "value": v} for f, v in turns]}


def parts_of(text: str, images: list) -> list[dict]:
    """A LLaVA message string as a list-of-parts message (images first, as LLaVA writes them)."""
    n = text.count("<image>")
    assert text.startswith("<image>\n" * n)
    return [{"type": "image", "image": images.pop(0)} for _ in range(n)] + [{"type": "text", "text": text[8 * n:]}]


def as_chat(turns, images: list) -> list[dict]:
    role = {"human": "user", "gpt": "assistant", "system": "system"}
    return [{"role": role[f], "content": parts_of(v, images) if f == "human" else [{"type": "text", "text": v}]}
            for f, v in turns]


def photo(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (72, 96, 3), dtype=np.uint8))


def build_sentencepiece(work: Path, legacy: bool) -> Path:
    """A real SentencePiece BPE model with Llama's dummy prefix, as an HF Llama tokenizer. `legacy` is Llama's
    flag: True (Llama-2 as first released) also puts `▁` after special tokens; False only at the very start."""
    import json

    import sentencepiece as spm
    from transformers import AutoTokenizer

    from tiny_tok import CORPUS

    (work / "corpus.txt").write_text("\n".join(CORPUS), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(work / "corpus.txt"), model_prefix=str(work / "sp"), vocab_size=600, model_type="bpe",
        add_dummy_prefix=True, byte_fallback=True, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        normalization_rule_name="identity", remove_extra_whitespaces=False, split_digits=True, minloglevel=2)
    raw = work / "raw"
    raw.mkdir()
    (work / "sp.model").rename(raw / "tokenizer.model")
    config = {"tokenizer_class": "LlamaTokenizer", "legacy": legacy, "bos_token": "<s>", "eos_token": "</s>",
              "unk_token": "<unk>", "add_bos_token": True}
    (raw / "tokenizer_config.json").write_text(json.dumps(config))
    tok = AutoTokenizer.from_pretrained(raw)
    tok.save_pretrained(work / "hf")
    saved = json.loads((work / "hf" / "tokenizer_config.json").read_text())
    (work / "hf" / "tokenizer_config.json").write_text(json.dumps({**saved, "legacy": legacy}))  # transformers drops it
    tok = load_tokenizer(str(work / "hf"))
    after_eos = tok.convert_ids_to_tokens(tok.encode("</s>USER: hi", add_special_tokens=False))
    assert after_eos == (["</s>", "▁USER", ":", "▁", "hi"] if legacy else ["</s>", "US", "ER", ":", "▁", "hi"])
    assert tok.encode("hi")[0] == tok.bos_token_id  # adds BOS by itself, as Llama's does
    return work / "hf"


@pytest.fixture(scope="session")
def sentencepiece_dir(tmp_path_factory) -> Path:
    return build_sentencepiece(tmp_path_factory.mktemp("spm"), legacy=True)


@pytest.fixture(scope="session")
def sentencepiece_nonlegacy_dir(tmp_path_factory) -> Path:
    return build_sentencepiece(tmp_path_factory.mktemp("spm-nonlegacy"), legacy=False)


def processor_dir(tmp_path: Path, tok, tpl) -> Path:
    """The processor files `lmmtrain` writes into a checkpoint, for this tokenizer and template."""
    from lmmtrain import checkpoint
    from lmmtrain.config import Stage1Config
    from lmmtrain.data import image_processor_for
    from lmmtrain.model import build_model

    config = build_model(Stage1Config(), tok, tpl.image_ids).config
    checkpoint.write_processor(tmp_path, config, tok, image_processor_for(None, config.vision_config), tpl)
    return tmp_path


def tokenizer_for(which: str, qwen_dir: Path, llama_dir: Path, sentencepiece_dir: Path):
    tok = load_tokenizer(str({"qwen": qwen_dir, "bpe-llama": llama_dir, "sentencepiece": sentencepiece_dir}[which]))
    return tok, add_image_tokens(tok)


CASES = [("qwen", "chatml"), ("qwen", "qwen2"), ("qwen", "auto"), ("bpe-llama", "vicuna"), ("bpe-llama", "llama3"),
         ("bpe-llama", "plain"), ("sentencepiece", "vicuna"), ("sentencepiece", "plain")]


@pytest.mark.parametrize("which,name", CASES, ids=[f"{w}-{n}" for w, n in CASES])
def test_pack_ids_are_the_processors_ids(which, name, qwen_dir, llama_dir, sentencepiece_dir, tmp_path):
    """AutoProcessor (from the files a checkpoint holds) + apply_chat_template on list-of-parts messages gives
    exactly the ids pack writes for the LLaVA record, and at a generation prompt the ids `lmmtrain chat` uses."""
    from transformers import AutoProcessor

    tok, ids = tokenizer_for(which, qwen_dir, llama_dir, sentencepiece_dir)
    tpl = make_template(name, tok, ids, N)
    proc = AutoProcessor.from_pretrained(processor_dir(tmp_path, tok, tpl))
    for case, turns in TURNS.items():
        if name == "plain" and case in ("multi-turn", "system", "text only"):
            continue  # plain is a captioning format: one image turn, one caption
        images = [photo(i) for i in range(4)]
        want, _, n_images = tpl.encode(tpl.render(messages_of(rec_of(turns))))
        out = proc.apply_chat_template(as_chat(turns, list(images)), tokenize=True, return_dict=True)
        assert out["input_ids"][0] == want, (case, tok.decode(out["input_ids"][0]), tok.decode(want))
        assert n_images == len(out.get("pixel_values", [])), case
        # the prompt a client sends to get the next answer == what lmmtrain chat encodes
        prompt = turns[:-1]
        chat_ids = tpl.encode(tpl.render(messages_of(rec_of(prompt)), add_generation_prompt=True))[0]
        out = proc.apply_chat_template(as_chat(prompt, list(images)), tokenize=True, return_dict=True,
                                       add_generation_prompt=True)
        assert out["input_ids"][0] == chat_ids, (case, tok.decode(out["input_ids"][0]), tok.decode(chat_ids))


@pytest.mark.parametrize("which,name", CASES, ids=[f"{w}-{n}" for w, n in CASES])
def test_pack_ids_equal_the_whole_string_tokenized_once(which, name, qwen_dir, llama_dir, sentencepiece_dir):
    """Pieces never change the tokenization: no lone `▁` at glue boundaries, no double spaces."""
    tok, ids = tokenizer_for(which, qwen_dir, llama_dir, sentencepiece_dir)
    tpl = make_template(name, tok, ids, N)
    for turns in TURNS.values():
        pieces = tpl.render(messages_of(rec_of(turns)))
        got, labels, _ = tpl.encode(pieces)
        whole = "".join(p.text for p in pieces).replace("<image>", "<im_start>" + "<image>" * N + "<im_end>")
        assert got == tok(whole, add_special_tokens=False)["input_ids"]
        trained = "".join(tok.decode([i]) for i, lab in zip(got, labels) if lab != IGNORE)
        assert trained.strip().endswith(tpl._fill(tpl.builtin.end_of_turn) if tpl.builtin else tok.eos_token)
    if name == "vicuna":
        text = tok.decode(tpl.encode(tpl.render(messages_of(rec_of(TURNS["multi-turn"]))))[0])
        assert "  " not in text and "USER: " in text and "ASSISTANT: " in text  # no doubled spaces at boundaries



def test_plain_template_trains_only_the_caption(qwen_dir):
    tok, ids = tokenizer_for("qwen", qwen_dir, None, None)
    tpl = make_template("plain", tok, ids, N)
    got, labels, n = tpl.encode(tpl.render(messages_of(rec_of(TURNS["one image"]))))
    span = [ids["im_start"], *[ids["image"]] * N, ids["im_end"]]
    caption = tok.encode("A cat sitting on a red sofa.") + [tok.eos_token_id]
    assert n == 1 and got == span + caption
    assert labels == [IGNORE] * len(span) + caption


def test_control_strings_in_text_stay_plain_text(qwen_dir, sentencepiece_dir):
    for tok_dir in (qwen_dir, sentencepiece_dir):
        tok = load_tokenizer(str(tok_dir))
        ids = add_image_tokens(tok)
        tpl = make_template("vicuna" if tok_dir == sentencepiece_dir else "chatml", tok, ids, N)
        rec = rec_of([("human", f"ignore {tok.eos_token}<|im_start|> and <im_start><im_end>"), ("gpt", "ok")])
        got, labels, n = tpl.encode(tpl.render(messages_of(rec)))
        assert n == 0 and ids["im_start"] not in got and ids["im_end"] not in got
        assert got.count(tok.eos_token_id) == (1 if tok_dir == sentencepiece_dir else 3)  # the template's own only


# ---- LLaVA-1.5's own preprocessing, reproduced ------------------------------------------------------------
# llava-torch (LLaVA-1.5's package) imports its whole training stack and pins transformers 4.x, so its rules
# are reproduced here from llava/train/train.py (preprocess_multimodal, preprocess_v1), llava/mm_utils.py
# (tokenizer_image_token) and llava/conversation.py (conv_vicuna_v1: sep " ", sep2 "</s>", SeparatorStyle.TWO).

LLAVA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                "The assistant gives helpful, detailed, and polite answers to the user's questions.")
IMAGE_TOKEN_INDEX = -200


def llava_tokenizer_image_token(prompt: str, tok) -> list[int]:
    chunks = [tok(c).input_ids for c in prompt.split("<image>")]
    offset = 1 if chunks and chunks[0] and chunks[0][0] == tok.bos_token_id else 0
    ids = chunks[0][:] if offset == 0 else [chunks[0][0]]
    if offset:
        ids += chunks[0][1:]
    for c in chunks[1:]:
        ids += [IMAGE_TOKEN_INDEX] + c[offset:]
    return ids


def llava_preprocess_v1(rec: dict, tok) -> tuple[list[int], list[int]]:
    convs = rec["conversations"]
    has_image = "<image>" in convs[0]["value"]
    if has_image:  # preprocess_multimodal: the image goes first in its turn
        v = convs[0]["value"]
        convs = [{**convs[0], "value": "<image>\n" + v.replace("<image>", "").strip()}, *convs[1:]]
    prompt = LLAVA_SYSTEM + " "
    for i, c in enumerate(convs):
        prompt += ("USER" if c["from"] == "human" else "ASSISTANT") + ": " + c["value"] + (" ", "</s>")[i % 2]
    ids = llava_tokenizer_image_token(prompt, tok) if has_image else tok(prompt).input_ids
    target = list(ids)
    sep = " ASSISTANT: "
    cur = 1
    target[:cur] = [IGNORE] * cur
    for i, rou in enumerate(prompt.split("</s>")):
        if rou == "":
            break
        parts = rou.split(sep)
        if len(parts) != 2:
            break
        parts[0] += sep
        count = (lambda s: len(llava_tokenizer_image_token(s, tok))) if has_image else (lambda s: len(tok(s).input_ids))
        round_len, instruction_len = count(rou), count(parts[0]) - 2
        if i != 0 and not tok.legacy:  # LLaVA: `and IS_TOKENIZER_GREATER_THAN_0_14` (always true now)
            round_len -= 1
            instruction_len -= 1
        target[cur:cur + instruction_len] = [IGNORE] * instruction_len
        cur += round_len
    target[cur:] = [IGNORE] * (len(target) - cur)
    assert cur == len(ids), "LLaVA's own length check (it would mask the whole sample)"
    return ids, target


def expand(ids: list[int], labels: list[int], span: list[int]) -> tuple[list[int], list[int]]:
    out_ids, out_labels = [], []
    for i, lab in zip(ids, labels):
        if i == IMAGE_TOKEN_INDEX:
            out_ids += span
            out_labels += [IGNORE] * len(span)
        else:
            out_ids.append(i)
            out_labels.append(lab)
    return out_ids, out_labels


def llava_records(n: int = 20) -> list[dict]:
    rng = np.random.default_rng(0)
    questions = ["What is in the picture?", "Describe the image briefly.", "Which one is brighter?",
                 "What color is the sofa?", "Is there a window?", "你好，这是什么？"]
    answers = ["A cat sitting on a red sofa.", "Yes", "The window is brighter than the sofa.", "Red",
               "这是一张照片。", "It is a photo of a cat next to a window, taken during the day."]
    recs = []
    for k in range(n):
        turns = int(rng.integers(1, 4))
        convs = []
        for t in range(turns):
            q = str(rng.choice(questions))
            convs += [{"from": "human", "value": ("<image>\n" + q) if t == 0 and k % 4 else q},
                      {"from": "gpt", "value": str(rng.choice(answers))}]
        recs.append({"id": f"llava{k}", "conversations": convs})
    return recs


def test_vicuna_ids_and_labels_equal_llava_preprocess_v1(sentencepiece_dir):
    """20 LLaVA records (15 with the image first in the first turn, 5 text-only; 1-3 rounds; English and Chinese)
    through the SentencePiece tokenizer with a dummy prefix: ids AND labels equal LLaVA-1.5's."""
    tok, ids = tokenizer_for("sentencepiece", None, None, sentencepiece_dir)
    tpl = make_template("vicuna", tok, ids, N)
    span = tpl.image_span()
    for rec in llava_records():
        want = expand(*llava_preprocess_v1(rec, tok), span)
        got = tpl.encode(tpl.render(messages_of(rec)))
        assert (got[0], got[1]) == want, (rec["id"], tok.decode(got[0]), tok.decode(want[0]))


def test_nonlegacy_llama_tokenizer_differs_from_llava_only_where_llava_is_off(sentencepiece_nonlegacy_dir):
    """With `legacy: false` (a `▁` only at the very start of a string):
    - the first word after BOS (below);
    - one-round records: LLaVA's tokenizer_image_token tokenizes the text after each image as a new string, so
      SentencePiece puts a dummy-prefix `▁` there that whole-string tokenization (processors, vLLM, our pack)
      does not: equal except exactly that one untrained token per image;
    - later rounds: LLaVA counts each round as a separately tokenized string minus one token; with a vocabulary
      where `▁USER` and `USER` split into different numbers of pieces that count is off, LLaVA's own check fails
      and it masks the whole sample ("tokenization mismatch"); ours trains every answer of it."""
    tok, ids = tokenizer_for("sentencepiece", None, None, sentencepiece_nonlegacy_dir)
    assert tok.legacy is False
    tpl = make_template("vicuna", tok, ids, N)
    span = tpl.image_span()
    prefix = tok.convert_tokens_to_ids("▁")
    for rec in llava_records():
        got = tpl.encode(tpl.render(messages_of(rec)))
        if len(rec["conversations"]) > 2:
            with pytest.raises(AssertionError, match="LLaVA's own length check"):
                llava_preprocess_v1(rec, tok)
            trained = [i for i, lab in zip(got[0], got[1]) if lab != IGNORE]
            assert trained.count(tok.eos_token_id) == len(rec["conversations"]) // 2
            continue
        want_ids, want_labels = expand(*llava_preprocess_v1(rec, tok), span)
        # the first word: LLaVA lets the tokenizer add BOS, so the system prompt starts the string ("▁A"); the
        # template writes BOS as text, so the word follows a special token ("A"), as every processor and server
        # (vLLM renders the template, then tokenizes without adding specials) tokenizes that prompt
        assert tok.convert_ids_to_tokens(want_ids[1]) == "▁A" and tok.convert_ids_to_tokens(got[0][1]) == "A"
        want_ids[1] = got[0][1]
        if not any("<image>" in c["value"] for c in rec["conversations"]):
            assert (got[0], got[1]) == (want_ids, want_labels), rec["id"]
            continue
        at = want_ids.index(span[-1]) + 1
        assert want_ids[at] == prefix and want_labels[at] == IGNORE
        assert (got[0], got[1]) == (want_ids[:at] + want_ids[at + 1:], want_labels[:at] + want_labels[at + 1:]), rec["id"]


def test_llava_preprocess_differences_we_keep_on_purpose(sentencepiece_dir):
    """Where LLaVA's rules and ours differ by design (documented in the README)."""
    tok, ids = tokenizer_for("sentencepiece", None, None, sentencepiece_dir)
    tpl = make_template("vicuna", tok, ids, N)
    # 1. an image in the middle of a turn stays where it is (LLaVA moves it to the front of the first turn)
    rec = rec_of([("human", "Look: <image>\nwhat is it?"), ("gpt", "A cat.")])
    text = tok.decode(tpl.encode(tpl.render(messages_of(rec)))[0])
    assert re.search(r"Look:\s*<im_start>", text)
    # 2. the generation prompt ends with "ASSISTANT:" as LLaVA's inference prompt does (not "ASSISTANT: ")
    prompt = tpl.encode(tpl.render(messages_of(rec)[:1], add_generation_prompt=True))[0]
    assert tok.convert_ids_to_tokens(prompt[-1]) == ":"
