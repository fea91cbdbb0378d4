"""lmmtrain on the tiny preset, CPU: stages, isolation of packed samples, checkpoints, chat, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from conftest import N, ROOT, pack_records, small, write_jsonl
from lmmdata.config import ConfigError
from lmmdata.shards import load_shard_tokenizer
from lmmtrain.config import Stage1Config, Stage2Config
from lmmtrain.data import PackedCollator, ShardDataset, image_processor_for
from lmmtrain.model import build_model, special_ids_of
from lmmtrain.stages import LMM_CONFIG, train_stage
from lmmtrain.step import loss_sum




def state(model, part: str) -> dict[str, torch.Tensor]:
    inner = model.model
    module = {"vision": inner.vision_tower, "projector": inner.multi_modal_projector, "lm": inner.language_model}[part]
    sd = {k: v.detach().clone() for k, v in module.state_dict().items()}
    if part == "lm":
        sd["lm_head"] = model.lm_head.weight.detach().clone()
    return sd


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_stage1_trains_only_the_projector(stage1_run, sample_shards):
    out, trainer, summary = stage1_run
    tok = load_shard_tokenizer(sample_shards)
    torch.manual_seed(42)  # run_stage seeds the preset's init with cfg.seed
    initial = build_model(Stage1Config(), tok, special_ids_of(tok))
    trained = trainer.model
    assert same(state(initial, "vision"), state(trained, "vision"))
    assert same(state(initial, "lm"), state(trained, "lm"))
    assert not same(state(initial, "projector"), state(trained, "projector"))
    assert summary["steps"] == 3
    info = json.loads((out / LMM_CONFIG).read_text())
    assert info["stage"] == "stage1" and info["image_tokens"] == N and info["trained"] == ["projector"]
    assert info["data"][0]["manifest_sha256"] and info["special_tokens"]["image"] == trained.config.image_token_id
    for f in ("tokenizer.json", "preprocessor_config.json", "model.safetensors", "config.json"):
        assert (out / f).is_file()


def test_tensorboard_gets_the_logged_losses_and_throughput(stage1_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, trainer, _ = stage1_run
    (run_dir,) = {f.parent for f in out.glob("runs/*/events.out.tfevents.*")}
    ev = EventAccumulator(str(run_dir))
    ev.Reload()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert [(s.step, round(s.value, 4)) for s in ev.Scalars("train/loss")] == \
        [(h["step"], round(h["loss"], 4)) for h in logged]
    tags = ev.Tags()["scalars"]
    assert len(ev.Scalars("train/tokens_per_s")) == 3 and {"train/pad_share", "train/image_token_share"} <= set(tags)


def test_checkpoint_reloads_in_native_class_with_identical_logits(stage1_run, sample_shards):
    from transformers import VipLlavaForConditionalGeneration

    out, trainer, _ = stage1_run
    native = VipLlavaForConditionalGeneration.from_pretrained(out).eval()
    model = trainer.model.eval()
    ds = ShardDataset([str(sample_shards)], image_processor_for(str(out), native.config.vision_config))
    b = PackedCollator(0, "rows")([ds[0]])
    b.pop("lmm_stats")
    with torch.no_grad():
        a = model(**{k: b[k] for k in ("input_ids", "position_ids", "pixel_values")}, use_cache=False).logits
        c = native(**{k: b[k] for k in ("input_ids", "position_ids", "pixel_values")}, use_cache=False).logits
    assert torch.equal(a, c)


def test_stage2_keeps_vision_and_trains_lm(stage1_run, sample_shards, tmp_path):
    s1, s1_trainer, _ = stage1_run
    trainer, summary = train_stage(small(Stage2Config, data=[str(sample_shards)], out=str(tmp_path / "s2"),
                                         init=str(s1), max_steps=2, lr=1e-3))
    before, after = s1_trainer.model, trainer.model
    assert same(state(before, "vision"), state(after, "vision"))
    assert not same(state(before, "lm"), state(after, "lm"))
    assert not same(state(before, "projector"), state(after, "projector"))
    info = json.loads((tmp_path / "s2" / LMM_CONFIG).read_text())
    assert info["stage"] == "stage2" and info["parent"] == str(s1)


def test_loss_falls_on_a_memorisable_set(stage1_run, memo_shards, tmp_path):
    s1 = stage1_run[0]
    _, summary = train_stage(small(Stage2Config, data=[str(memo_shards)], out=str(tmp_path / "memo"), init=str(s1),
                                   max_steps=30, lr=1e-2, warmup_ratio=0.0, scheduler="constant", batch_rows=1))
    assert summary["first_loss"] > 10
    assert summary["last_loss"] < 0.3 * summary["first_loss"], summary


@pytest.mark.parametrize("layout,attn", [("rows", "sdpa"), ("flat", "sdpa"), ("rows", "flex_attention")])
def test_packed_batch_loss_equals_samples_one_by_one(sample_shards, layout, attn):
    tok = load_shard_tokenizer(sample_shards)
    ids = special_ids_of(tok)
    torch.manual_seed(0)
    model = build_model(Stage1Config(attn=attn), tok, ids).eval()
    ds = ShardDataset([str(sample_shards)], image_processor_for(None, model.config.vision_config))
    rows = [ds[i] for i in range(min(3, len(ds)))]
    assert sum(len(r["seq_lens"]) for r in rows) > 6  # really packed
    batch = PackedCollator(tok.pad_token_id, layout)(rows)
    with torch.no_grad():
        total, count = loss_sum(model, batch)
        ref_sum, ref_count = 0.0, 0
        for r in rows:
            start = img = 0
            for length in r["seq_lens"]:
                x = r["input_ids"][start:start + length][None]
                y = r["labels"][start:start + length][None]
                k = int((x == ids["im_start"]).sum())
                out = model(input_ids=x, labels=y, pixel_values=r["pixel_values"][img:img + k] if k else None)
                n = int((y[:, 1:] != -100).sum())
                if n:
                    ref_sum += out.loss.double().item() * n  # transformers' own causal-LM loss (mean per sample)
                    ref_count += n
                start, img = start + length, img + k
    assert count == ref_count
    assert abs(total.item() / count - ref_sum / ref_count) < 1e-5


def test_collator_isolates_samples_and_pads_as_own_block():
    items = [{"input_ids": torch.tensor([5, 6, 7, 8, 9]), "labels": torch.tensor([5, 6, 7, 8, 9]), "seq_lens": [3, 2],
              "n_images": 0},
             {"input_ids": torch.tensor([1, 2]), "labels": torch.tensor([-100, 2]), "seq_lens": [2], "n_images": 0}]
    rows = PackedCollator(0, "rows")(items)
    assert rows["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 0, 1, 2]]
    assert rows["labels"].tolist() == [[-100, 6, 7, -100, 9], [-100, 2, -100, -100, -100]]
    assert rows["input_ids"].tolist() == [[5, 6, 7, 8, 9], [1, 2, 0, 0, 0]]
    assert rows["lmm_stats"] == {"real_tokens": 7, "slots": 10, "rows": 2, "images": 0}
    flat = PackedCollator(0, "flat")(items)
    assert flat["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1]]
    assert flat["labels"].tolist() == [[-100, 6, 7, -100, 9, -100, 2]]


def test_resume_continues_from_the_saved_step(sample_shards, tmp_path, monkeypatch):
    base = dict(data=[str(sample_shards)], max_steps=4, save_steps=2, batch_rows=1, lr=1e-2, keep_checkpoints=True)
    full, _ = train_stage(small(Stage1Config, out=str(tmp_path / "a"), **base))
    assert (tmp_path / "a" / "checkpoint-2").is_dir()
    fetched = []
    original = ShardDataset.__getitem__
    monkeypatch.setattr(ShardDataset, "__getitem__", lambda self, i: fetched.append(i) or original(self, i))
    resumed, summary = train_stage(small(Stage1Config, out=str(tmp_path / "b"), resume=str(tmp_path / "a" / "checkpoint-2"), **base))
    assert len(fetched) == 2 and summary["steps"] == 4  # only steps 3 and 4 ran
    ref = {h["step"]: h["loss"] for h in full.state.log_history if "loss" in h}
    got = {h["step"]: h["loss"] for h in resumed.state.log_history if "loss" in h}
    assert got[3] == pytest.approx(ref[3], abs=1e-6) and got[4] == pytest.approx(ref[4], abs=1e-6)  # same rows, same order
    for k, v in state(full.model, "projector").items():
        assert torch.allclose(v, state(resumed.model, "projector")[k], atol=1e-6)


def test_mismatched_shards_are_refused(sample_data, qwen_dir, llama_dir, stage1_run, tmp_path):
    wrong_n = pack_records(sample_data, tmp_path / "n9", qwen_dir, sample_data.parent, image_tokens=9)
    with pytest.raises(ConfigError, match=r"9 image tokens per image .* gives 16 .*--image-tokens 16"):
        train_stage(small(Stage1Config, data=[str(wrong_n)], out=str(tmp_path / "x")))
    with pytest.raises(ConfigError, match="--init"):
        train_stage(small(Stage2Config, data=[str(wrong_n)], out=str(tmp_path / "y")))
    other_tok = pack_records(sample_data, tmp_path / "llama", llama_dir, sample_data.parent, template="llama3")
    with pytest.raises(ConfigError, match="another tokenizer"):
        train_stage(small(Stage2Config, data=[str(other_tok)], out=str(tmp_path / "z"), init=str(stage1_run[0])))
    with pytest.raises(ConfigError, match="already holds a finished checkpoint"):
        train_stage(small(Stage1Config, data=[str(wrong_n)], out=str(stage1_run[0])))


def test_lora_stage2_saves_a_merged_native_checkpoint(stage1_run, sample_shards, tmp_path):
    from transformers import VipLlavaForConditionalGeneration

    s1, s1_trainer, _ = stage1_run
    out = tmp_path / "lora"
    trainer, _ = train_stage(small(Stage2Config, data=[str(sample_shards)], out=str(out), init=str(s1), max_steps=2,
                                   lr=1e-2, lora=True, lora_r=4))
    native = VipLlavaForConditionalGeneration.from_pretrained(out)
    assert same(state(s1_trainer.model, "vision"), state(native, "vision"))
    assert not same(state(s1_trainer.model, "lm"), state(native, "lm"))  # LoRA deltas merged in
    assert not same(state(s1_trainer.model, "projector"), state(native, "projector"))


def test_deepspeed_zero2_single_process_on_cpu(stage1_run, sample_shards, tmp_path):
    out = tmp_path / "ds"
    _, summary = train_stage(small(Stage1Config, data=[str(sample_shards)], out=str(out), max_steps=2,
                                   deepspeed=str(ROOT / "pipelines" / "deepspeed" / "zero2.json")))
    assert summary["steps"] == 2 and (out / LMM_CONFIG).is_file()


def test_a_build_lock_left_by_a_killed_run_is_cleared_and_a_live_one_awaited(tmp_path, monkeypatch, capsys):
    import threading

    from lmmtrain.stages import clear_stale_build_lock

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    lock = tmp_path / "deepspeed_shm_comm" / "lock"
    lock.parent.mkdir()
    lock.touch()
    os.utime(lock, (time.time() - 400, time.time() - 400))
    assert clear_stale_build_lock() == [lock] and not lock.exists()
    assert "stale build lock" in capsys.readouterr().err
    lock.touch()  # a live build: its lock goes after 0.5 s and nothing is removed
    threading.Timer(0.5, lock.unlink).start()
    t = time.monotonic()
    assert clear_stale_build_lock(stale_s=30) == [] and 0.4 < time.monotonic() - t < 10
    lock.touch()  # a young lock that never goes: removed once it is stale_s old
    t = time.monotonic()
    assert clear_stale_build_lock(stale_s=1) == [lock] and time.monotonic() - t < 5 and not lock.exists()
    assert clear_stale_build_lock() == []  # no lock: returns at once


def test_zero3_two_ranks_with_and_without_images_does_not_hang(sample_data, qwen_dir, tmp_path):
    """Rank batches differ in having images; every rank still runs the tower (no hang, rows split without overlap)."""
    recs = [{"id": f"t{i}", "conversations": [{"from": "human", "value": f"Count to {i}."},
                                               {"from": "gpt", "value": " ".join(str(j) for j in range(i))}]}
            for i in range(3, 7)]
    recs += [{"id": "img", "image": "images/coffee.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt", "value": "Coffee."}]}]
    text = pack_records(write_jsonl(tmp_path / "text.jsonl", recs[:4]), tmp_path / "text", qwen_dir, sample_data.parent)
    image = pack_records(write_jsonl(tmp_path / "img.jsonl", recs[4:]), tmp_path / "img", qwen_dir, sample_data.parent)
    log = tmp_path / "rows"
    from lmmtrain.stages import _free_port

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           str(ROOT / "tests" / "dist_train.py"), str(text), str(image), str(tmp_path / "out"), str(log)]
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # torchrun's torchelastic_* log dir lands here, not in /tmp
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=420, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    per_rank = [sorted({int(r) for r in (tmp_path / f"rows.{rank}").read_text().split()}) for rank in (0, 1)]
    assert sorted(per_rank) == [[0], [1]]  # row 0 (text only) on one rank, row 1 (image) on the other
    assert (tmp_path / "out" / LMM_CONFIG).is_file()
    assert "lmmtrain stage1: summary" in proc.stderr + proc.stdout and "terminate called" not in proc.stderr


def test_stage_cli_and_chat(stage1_run, sample_data, tmp_path):
    s1 = stage1_run[0]
    img = sample_data.parent / "images"
    cmd = [sys.executable, "-m", "lmmtrain.cli", "chat", str(s1), "--max-new-tokens", "4",
           "-i", str(img / "astronaut.jpg"), "-p", "What is this?", "-p", f"/image {img / 'coffee.jpg'}",
           "-p", f"/image {img / 'rocket.jpg'}", "-p", "Compare these two.", "-p", "Now plain text."]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("assistant:") == 3 and "3 answer(s)" in proc.stderr
    assert "you [1 image(s)]: What is this?" in proc.stdout and "you [2 image(s)]: Compare" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "lmmtrain.cli", "stage2", "-d", str(tmp_path), "-o", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert bad.returncode == 1 and "manifest" in bad.stderr


def test_interactive_chat_refuses_a_missing_image_at_once(stage1_run, sample_data):
    """`/image /nonexistent.jpg` is refused when typed (not at the next message); the chat goes on and exits 0."""
    img = sample_data.parent / "images" / "coffee.jpg"
    script = f"/image /nonexistent.jpg\nHello?\n/image {img}\n<image> and <image>?\nWhat is it?\n/quit\n"
    proc = subprocess.run([sys.executable, "-m", "lmmtrain.cli", "chat", str(stage1_run[0]), "--max-new-tokens", "3"],
                          input=script, capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "image /nonexistent.jpg: no such file" in proc.stdout
    assert "2 <image> placeholder(s) in '<image> and <image>?' but 1 image(s) attached" in proc.stdout
    assert proc.stdout.count("assistant:") == 2 and "2 answer(s)" in proc.stderr  # "Hello?" and "What is it?"


def test_final_model_stays_and_resumable_checkpoints_go_unless_kept(sample_shards, tmp_path):
    for keep in (False, True):
        out = tmp_path / f"keep-{keep}"
        train_stage(small(Stage1Config, data=[str(sample_shards)], out=str(out), max_steps=2, save_steps=1,
                          keep_checkpoints=keep))
        left = sorted(p.name for p in out.glob("checkpoint-*"))
        assert left == (["checkpoint-1", "checkpoint-2"] if keep else [])
        assert (out / LMM_CONFIG).is_file() and (out / "model.safetensors").is_file()


def test_progress_bar_shows_loss_and_throughput_between_log_lines(sample_shards, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lmmtrain.cli", "stage1", "-d", str(sample_shards), "-o",
                           str(tmp_path / "s1"), "--max-steps", "3", "--logging-steps", "1000", "--workers", "0",
                           "--batch-rows", "1"], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step 3:" not in proc.stderr  # no log line in this run (logging every 1000 steps) ...
    bar = [line for line in proc.stderr.splitlines() if line.startswith("training")]
    assert bar and "3/3 loss " in bar[-1] and " tok/s" in bar[-1], bar  # ... the bar still shows both
    noise = ("Loading weights", "Writing model shards", "Setting accelerator", "use_fast", "torchvision")
    assert not [n for n in noise if n in proc.stdout + proc.stderr]


def test_generate_with_0_1_2_images_and_multi_turn(stage1_run, sample_data):
    from PIL import Image

    from lmmtrain.chat import ChatError, generate, load_chat_model, normalise

    chat = load_chat_model(stage1_run[0], device="cpu")
    img = sample_data.parent / "images"
    a, b = Image.open(img / "astronaut.jpg"), Image.open(img / "coffee.jpg")
    for images in ([], [a], [a, b]):
        answer = generate(chat, [{"role": "user", "content": "Describe."}], images, max_new_tokens=3)
        assert isinstance(answer, str)
    turns = [{"role": "user", "content": "<image>\nWhat is it?"}, {"role": "assistant", "content": "A photo."},
             {"role": "user", "content": "And this one? <image>"}]
    ids, _, n = chat.template.encode(chat.template.render(normalise(turns, 2), add_generation_prompt=True))
    assert n == 2 and ids.count(chat.model.config.image_token_id) == 2 * N
    assert isinstance(generate(chat, turns, [a, b], max_new_tokens=3), str)
    # the images reach the model: the next-token distribution depends on them
    with torch.no_grad():
        def logits(im):
            px = chat.image_processor(images=[im.convert("RGB")], return_tensors="pt")["pixel_values"]
            x = torch.tensor([chat.template.encode(chat.template.render(normalise(turns[:1], 1), True))[0]])
            return chat.model(input_ids=x, pixel_values=px).logits[0, -1]
        assert not torch.allclose(logits(a), logits(b))
    with pytest.raises(ChatError, match="2 <image> placeholder"):
        generate(chat, turns, [a])
    with pytest.raises(ChatError, match="unknown role"):
        generate(chat, [{"role": "robot", "content": "hi"}])


def test_siglip_token_count_agrees_between_pack_and_model(tmp_path):
    """VipLlava drops the first vision token; SigLIP has no CLS, so pack must count patches - 1."""
    from transformers import Qwen2Config, SiglipVisionConfig, VipLlavaConfig, VipLlavaForConditionalGeneration

    from lmmdata.pack import image_tokens_from_vision
    from lmmtrain.model import image_tokens_for

    vc = SiglipVisionConfig(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=4)
    (tmp_path / "vision.json").write_text(json.dumps(vc.to_dict()))
    n, info = image_tokens_from_vision(str(tmp_path / "vision.json"))
    assert n == image_tokens_for(vc) == 15 and info["drops_first_patch"]
    model = VipLlavaForConditionalGeneration(VipLlavaConfig(
        vision_config=vc, text_config=Qwen2Config(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                                  num_key_value_heads=2, intermediate_size=64),
        image_token_id=63, vision_feature_layer=-2))
    feats = model.get_image_features(pixel_values=torch.zeros(1, 3, 32, 32)).pooler_output
    assert feats.shape[1] == n


def test_gradient_checkpointing_gives_the_same_losses(stage1_run, sample_shards, tmp_path):
    losses = []
    for gc in (False, True):
        trainer, _ = train_stage(small(Stage2Config, data=[str(sample_shards)], out=str(tmp_path / f"gc{gc}"),
                                       init=str(stage1_run[0]), max_steps=2, lr=1e-3, gradient_checkpointing=gc))
        losses.append([h["loss"] for h in trainer.state.log_history if "loss" in h])
    assert losses[0] == pytest.approx(losses[1], abs=1e-5) and len(losses[0]) == 2


def test_stage1_can_train_only_the_image_token_embedding_rows(sample_shards, tmp_path):
    tok = load_shard_tokenizer(sample_shards)
    ids = special_ids_of(tok)
    torch.manual_seed(42)
    initial = build_model(Stage1Config(), tok, ids)
    trainer, _ = train_stage(small(Stage1Config, data=[str(sample_shards)], out=str(tmp_path / "e"), max_steps=2,
                                   lr=1e-2, train_image_token_embeddings=True))
    before, after = initial.get_input_embeddings().weight, trainer.model.get_input_embeddings().weight
    changed = sorted(torch.nonzero((before != after).any(1)).flatten().tolist())
    assert changed and set(changed) <= {ids["im_start"], ids["im_end"]}  # <image> rows are replaced by features
    assert ids["im_start"] in changed
    rest = {k: v for k, v in state(initial, "lm").items() if k != "embed_tokens.weight"}
    assert same(rest, {k: v for k, v in state(trainer.model, "lm").items() if k != "embed_tokens.weight"})
    assert same(state(initial, "vision"), state(trainer.model, "vision"))


@pytest.fixture(scope="module")
def pretrained_parts(qwen_dir, llama_dir, tmp_path_factory):
    """A 'downloaded' CLIP model and Qwen2 LM (tiny, random) in local dirs, the LM with Qwen2.5's tokenizer."""
    from transformers import AutoTokenizer, CLIPConfig, CLIPModel, Qwen2Config, Qwen2ForCausalLM

    root = tmp_path_factory.mktemp("hub")
    torch.manual_seed(1)
    clip = CLIPModel(CLIPConfig(
        vision_config=dict(image_size=64, patch_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4), text_config=dict(hidden_size=32, intermediate_size=64,
                                                                     num_hidden_layers=1, num_attention_heads=4),
        projection_dim=16))
    clip.save_pretrained(root / "clip")
    lm = Qwen2ForCausalLM(Qwen2Config(vocab_size=151665, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=4, num_key_value_heads=2))
    lm.save_pretrained(root / "qwen")
    AutoTokenizer.from_pretrained(qwen_dir).save_pretrained(root / "qwen")
    lm.save_pretrained(root / "other")
    AutoTokenizer.from_pretrained(llama_dir).save_pretrained(root / "other")
    return root, clip, lm


def test_stage1_from_pretrained_vision_and_lm(pretrained_parts, sample_shards, tmp_path):
    root, clip, lm = pretrained_parts
    trainer, _ = train_stage(small(Stage1Config, data=[str(sample_shards)], out=str(tmp_path / "p"), max_steps=1,
                                   vision=str(root / "clip"), lm=str(root / "qwen")))
    model = trainer.model
    tower = model.model.vision_tower.state_dict()
    for k, v in clip.vision_model.state_dict().items():
        assert torch.equal(tower.get(k, tower.get(f"vision_model.{k}")), v), k
    emb = model.get_input_embeddings().weight
    assert emb.shape[0] == 151668  # resized for the three image tokens
    assert torch.equal(emb[:151665], lm.get_input_embeddings().weight)
    assert torch.equal(model.lm_head.weight[:151665], lm.lm_head.weight)
    layer = model.model.language_model.layers[0].self_attn.q_proj.weight
    assert torch.equal(layer, lm.model.layers[0].self_attn.q_proj.weight)
    mean = lm.get_input_embeddings().weight.mean(0)
    assert (emb[151665:] - mean).abs().max() < 0.05  # new rows start near the mean embedding
    with pytest.raises(ConfigError, match="re-pack with `lmmdata pack --tokenizer"):
        train_stage(small(Stage1Config, data=[str(sample_shards)], out=str(tmp_path / "q"), max_steps=1,
                          vision=str(root / "clip"), lm=str(root / "other")))
