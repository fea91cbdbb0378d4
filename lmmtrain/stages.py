"""The two training stages: model set-up, freezing, HF Trainer (+ DeepSpeed), outputs.

`run_stage(cfg)` is the whole of `lmmtrain stage1` / `stage2`: check the shards
against the model, freeze what the stage does not train, train with a packed
loss, log throughput, and write an HF checkpoint (model, tokenizer with the
image tokens, image processor) plus `lmm_config.json`, written last, which
records the stage, the template and the data manifests' hashes.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import math
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import torch
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from lmmdata.config import ConfigError
from lmmdata.shards import MANIFEST, load_shard_tokenizer, read_manifest
from lmmdata.stats import console
from lmmdata.template import make_template

from . import checkpoint
from .config import LMM_CONFIG, check, check_checkpoint
from .data import PackedCollator, ShardDataset, check_compatible, image_processor_for
from .model import (ModelError, build_model, check_fits, default_attn, freeze_for_stage, load_checkpoint,
                    special_ids_of, train_token_rows)
from .step import add_blank_image, loss_sum

CHECKPOINT_FORMAT = "lmm-checkpoint"

# Dense bf16 peak FLOP/s per GPU, for MFU (matched against torch.cuda.get_device_name()).
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "H800": 989e12, "A100": 312e12, "A800": 312e12,
              "L40S": 362e12, "L40": 181e12, "A10G": 70e12, "A10": 125e12, "L4": 121e12, "4090": 165e12}


def quiet_libraries() -> None:
    """Silence what a user cannot act on: transformers' per-file tqdm bars (weights load/save) and
    DeepSpeed's "Setting accelerator to CPU" warning on machines without a GPU (CPU is meant there)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if not torch.cuda.is_available() and not (hasattr(torch, "xpu") and torch.xpu.is_available()) \
            and not torch.backends.mps.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def peak_flops() -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


def _numel(module) -> int:
    return sum(getattr(p, "ds_numel", p.numel()) for p in module.parameters())


@dataclasses.dataclass
class FlopModel:
    """Matmul FLOPs of one step (attention scores and the projector left out; good to a few %)."""

    vision: int  # vision tower parameters (forward only: frozen)
    body: int  # LM parameters without embeddings and LM head
    head: int  # LM head parameters (applied to trained positions only)
    lm_trained: bool

    @classmethod
    def of(cls, model, stage: str) -> "FlopModel":
        inner = model.model
        body = _numel(inner.language_model) - _numel(inner.language_model.get_input_embeddings())
        return cls(_numel(inner.vision_tower), body, _numel(model.lm_head), stage == "stage2")

    def step(self, tokens: int, trained: int, patches: int) -> float:
        per = 6 if self.lm_trained else 4  # forward + activation grads (+ weight grads when the LM trains)
        return per * (self.body * tokens + self.head * trained) + 2 * self.vision * patches


class LmmTrainer(Trainer):
    """HF Trainer with the packed loss and throughput logging."""

    def __init__(self, *args, stage: str = "stage1", image_tokens: int = 0, special: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        special = special or {}
        vc = _unwrap(self.model).config.vision_config
        self.blank = dict(span=[special.get("im_start"), *[special.get("image")] * image_tokens, special.get("im_end")],
                          image_size=vc.image_size, channels=vc.num_channels, pad_id=special.get("pad", 0))
        self.model_accepts_loss_kwargs = True  # our loss divides by the batch's trained-token count itself
        self.flop_model = FlopModel.of(_unwrap(self.model), stage)
        self.image_tokens = image_tokens
        self.peak = peak_flops()
        self.step_loss = None  # this rank's loss of the step in progress (sum over accumulation), detached
        self._reset_meter()

    def take_step_loss(self):
        """The finished step's loss on this rank (a detached tensor, or None); the next step starts from zero."""
        loss, self.step_loss = self.step_loss, None
        return loss

    def tokens_per_s(self) -> float | None:
        """Real tokens per second, all ranks, since the last log line."""
        m = self.meter
        elapsed = time.perf_counter() - m["t0"]
        return m["real"] * self.args.world_size / elapsed if m["real"] and elapsed > 0 else None

    def _reset_meter(self) -> None:
        self.meter = {"real": 0, "slots": 0, "images": 0, "trained": 0, "flops": 0.0, "t0": time.perf_counter()}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        stats = inputs.pop("lmm_stats", None)
        if "pixel_values" not in inputs:
            inputs = add_blank_image(inputs, **self.blank)
        loss, n = loss_sum(model, inputs)
        denom = num_items_in_batch if num_items_in_batch is not None else max(n, 1)
        loss = loss / denom
        if model.training:
            part = loss.detach()
            self.step_loss = part if self.step_loss is None else self.step_loss + part
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        if stats and model.training:
            m = self.meter
            m["real"] += stats["real_tokens"]
            m["slots"] += stats["slots"]
            m["images"] += stats["images"]
            m["trained"] += n
            patches = stats["images"] * (self.image_tokens + 1)
            m["flops"] += self.flop_model.step(stats["real_tokens"], n, patches)
        return (loss, None) if return_outputs else loss

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Load a checkpoint-N's weights through `from_pretrained`.

        transformers 5.24's Trainer loads the safetensors file with `load_state_dict(strict=False)`,
        but VipLlava/Llava files are written in the legacy key layout (`language_model.model.*`),
        so nothing matched and the resumed run silently restarted from the initial weights.
        """
        model = model or self.model
        if self.is_deepspeed_enabled or hasattr(model, "peft_config"):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        loaded = type(model).from_pretrained(resume_from_checkpoint, dtype=next(model.parameters()).dtype)
        model.load_state_dict(loaded.state_dict(), strict=True)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        m = self.meter
        elapsed = time.perf_counter() - m["t0"]
        if m["real"] and elapsed > 0 and "loss" in logs:
            world = self.args.world_size
            logs["tokens_per_s"] = round(m["real"] * world / elapsed, 1)
            logs["pad_share"] = round(1 - m["real"] / m["slots"], 4)
            logs["image_token_share"] = round(m["images"] * self.image_tokens / m["real"], 4)
            if self.peak:
                logs["mfu"] = round(m["flops"] / elapsed / self.peak, 4)
            self._reset_meter()
        super().log(logs, start_time)


def _unwrap(model, peft: bool = True):
    """The HF model inside DeepSpeed/DDP wrappers (and inside a PEFT wrapper unless `peft=False`)."""
    while hasattr(model, "module"):
        model = model.module
    if peft and hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


class RichProgress(TrainerCallback):
    """A rich progress bar with a live loss and throughput (replaces the tqdm bar).

    Between log lines the bar shows the loss of the latest step on this rank and the
    tokens/s since the last log, refreshed at most every `every` seconds (reading the
    loss is a device sync, so not at every step on a GPU).
    """

    def __init__(self, every: float = 0.5) -> None:
        self.progress = None
        self.task = None
        self.trainer: "LmmTrainer | None" = None  # set once the trainer exists
        self.every = every
        self.shown = 0.0
        self.last: dict[str, Any] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        if state.is_world_process_zero:
            self.progress = Progress(TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                     console=console)
            self.progress.start()
            self.task = self.progress.add_task("train", total=state.max_steps, completed=state.global_step, info="")

    def on_step_end(self, args, state, control, **kwargs):
        loss = self.trainer.take_step_loss() if self.trainer is not None else None
        if not self.progress:
            return
        self.progress.update(self.task, completed=state.global_step)
        now = time.perf_counter()
        if loss is not None and now - self.shown >= self.every:
            self.shown = now
            rate = self.trainer.tokens_per_s()
            self.progress.update(self.task, info=f"loss {float(loss):.4f}" + (f"  {rate:,.0f} tok/s" if rate else ""))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.progress and logs and "loss" in logs:
            self.last = {**logs, "step": state.global_step}
            info = f"loss {logs['loss']:.4f}" + (f"  {logs['tokens_per_s']:,.0f} tok/s" if "tokens_per_s" in logs else "")
            self.progress.update(self.task, info=info)
            self.progress.console.print(
                f"step {state.global_step}: " + "  ".join(f"{k} {_fmt(v)}" for k, v in logs.items()), highlight=False)

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress:
            self.progress.stop()


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _manifest_hash(d: str) -> str:
    return hashlib.sha256((Path(d) / MANIFEST).read_bytes()).hexdigest()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _single_process_env() -> dict[str, str] | None:
    """Let DeepSpeed start without a launcher (one process) by filling the rendezvous variables.

    Returns the environment as it was (None when a launcher set it up), so that the run can put it
    back and end its world-of-one state when it ends (`_end_single_process`): otherwise RANK,
    MASTER_PORT, ACCELERATE_* and accelerate's DeepSpeed state leak into every later run in this
    process and into every process it starts."""
    if "RANK" in os.environ or "OMPI_COMM_WORLD_RANK" in os.environ:
        return None
    before = dict(os.environ)
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    return before


def _end_single_process(before: dict[str, str]) -> None:
    from accelerate.state import AcceleratorState

    finish_distributed()
    AcceleratorState._reset_state(reset_partial_state=True)
    for key in set(os.environ) - set(before):
        del os.environ[key]
    os.environ.update(before)


STALE_LOCK_S = 300  # a DeepSpeed CPU op builds in well under a minute; a lock this old was left by a killed run


def clear_stale_build_lock(op: str = "deepspeed_shm_comm", stale_s: float = STALE_LOCK_S) -> list[Path]:
    """Remove torch's JIT-build lock for `op` when a killed run left it behind, and say so.

    DeepSpeed on the CPU builds its shared-memory op with torch.utils.cpp_extension,
    which waits forever on a `lock` file in the build directory. A run killed while
    holding it (Ctrl-C, OOM, a timeout) leaves the file, and every later run hangs
    silently. A lock younger than `stale_s` may belong to a live build: wait for it
    to go, at most until it is `stale_s` old. Returns the locks removed.
    """
    from torch.utils.cpp_extension import get_default_build_root

    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    locks = list(Path(root).glob(f"{op}/lock")) if root else list(Path(get_default_build_root()).glob(f"*/{op}/lock"))
    removed = []
    for lock in locks:
        while True:
            try:
                age = time.time() - lock.stat().st_mtime
            except FileNotFoundError:
                break
            if age >= stale_s:
                lock.unlink(missing_ok=True)
                console.print(f"[yellow]removed a stale build lock left by a killed run ({age:.0f} s old): {lock}",
                              highlight=False)
                removed.append(lock)
                break
            time.sleep(min(1.0, stale_s - age))
    return removed


def _cpu_deepspeed_state() -> None:
    """Several CPU processes under DeepSpeed (CI): give accelerate the gloo backend it would not pick itself.

    Without it accelerate sees no backend on a CPU-only machine and treats every rank
    as a world of one (each rank would read the whole dataset) while DeepSpeed itself
    communicates across all ranks.
    """
    from accelerate import PartialState

    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    PartialState(backend="gloo")


def _load_model(cfg, tokenizer, image_ids):
    if cfg.init:
        lmm = read_lmm_config(cfg.init)
        model = load_checkpoint(cfg.init, cfg.attn)
        return model, lmm
    torch.manual_seed(cfg.seed)
    return build_model(cfg, tokenizer, image_ids), None


def read_lmm_config(path: str) -> dict:
    check_checkpoint(path, "checkpoint")
    return json.loads((Path(path) / LMM_CONFIG).read_text(encoding="utf-8"))


def _apply_lora(model, cfg):
    from peft import LoraConfig, get_peft_model

    lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
                      modules_to_save=["multi_modal_projector"])
    return get_peft_model(model, lcfg)


def training_args(cfg) -> TrainingArguments:
    cuda = torch.cuda.is_available()
    bf16 = cfg.bf16 if cfg.bf16 is not None else bool(cuda and torch.cuda.is_bf16_supported())
    if bf16 and not (cuda and torch.cuda.is_bf16_supported()):
        raise ConfigError("--bf16 needs a GPU with bf16 support; leave it unset (auto) or pass --no-bf16 here")
    extra: dict[str, Any] = {}
    if cfg.deepspeed and not cuda:
        clear_stale_build_lock()
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            extra["accelerator_config"] = {"use_configured_state": True}
            _cpu_deepspeed_state()
    return TrainingArguments(**extra,
        output_dir=cfg.out, per_device_train_batch_size=cfg.batch_rows, gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps, warmup_steps=cfg.warmup_ratio,
        lr_scheduler_type=cfg.scheduler, weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, bf16=bf16,
        activation_checkpointing=cfg.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        deepspeed=cfg.deepspeed, seed=cfg.seed, data_seed=cfg.seed, save_strategy="steps", save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit, logging_steps=cfg.logging_steps,
        report_to=[] if cfg.report_to in ("none", "", None) else [cfg.report_to],
        dataloader_num_workers=cfg.workers, remove_unused_columns=False, disable_tqdm=True,
        dataloader_pin_memory=cuda,
    )


def check_shards(dirs: list[str], full: bool = False) -> None:
    """Shards as packed: files, sizes and row counts always (cheap); every sha256 with `full` (reads all bytes)."""
    from lmmdata.shards import ShardError, check_quick, verify

    for d in dirs:
        try:
            check_quick(d)
            if full:
                verdict = verify(d)
                if not verdict.clean:
                    raise ShardError(f"{d}: {verdict}; re-pack it or restore the files")
        except ShardError as e:
            raise ConfigError(str(e)) from None


def run_stage(cfg) -> dict[str, Any]:
    """Train one stage; return a summary (steps, losses, throughput, where the checkpoint is)."""
    return train_stage(cfg)[1]


def train_stage(cfg) -> tuple[LmmTrainer, dict[str, Any]]:
    """`run_stage`, also returning the trainer (its model is the one that was saved)."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

    out = Path(cfg.out)
    if cfg.stage not in ("stage1", "stage2"):
        raise ConfigError(f"unknown stage {cfg.stage!r}")
    check(cfg)
    quiet_libraries()
    if cfg.attn == "flex_attention" and not torch.cuda.is_available():
        raise ConfigError("attn flex_attention trains only on a GPU (PyTorch has no flex-attention backward on CPU); "
                          "use sdpa here")
    check_shards(cfg.data, full=cfg.verify_shards)
    try:
        manifest = check_compatible(list(cfg.data))
        tokenizer = load_shard_tokenizer(cfg.data[0])
        image_ids = special_ids_of(tokenizer)
        model, parent = _load_model(cfg, tokenizer, image_ids)
        if parent and parent["vocab_hash"] != manifest["tokenizer"]["vocab_hash"]:
            raise ModelError(f"{cfg.init} was trained with another tokenizer than the shards in {cfg.data[0]} "
                             "(vocab hash differs); re-pack the data with the checkpoint's tokenizer")
        check_fits(model, tokenizer, manifest, cfg.data[0])
    except (ModelError, ValueError, OSError) as e:
        raise ConfigError(str(e)) from e
    counts = freeze_for_stage(model, cfg.stage)
    if getattr(cfg, "train_image_token_embeddings", False):
        train_token_rows(model, list(image_ids.values()))
        counts["trainable"] += len(image_ids) * model.get_input_embeddings().weight.shape[1]
    if getattr(cfg, "lora", False):
        model = _apply_lora(model, cfg)
        counts["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    processor = image_processor_for(cfg.init or cfg.vision, model.config.vision_config)
    dataset = ShardDataset(list(cfg.data), processor)
    attn = model.config._attn_implementation if hasattr(model.config, "_attn_implementation") else default_attn(cfg.attn)
    layout = cfg.layout if cfg.layout != "auto" else ("flat" if attn == "flash_attention_2" else "rows")
    env_before = _single_process_env() if cfg.deepspeed else None
    args = training_args(cfg)
    resume = get_last_checkpoint(cfg.out) if cfg.resume == "auto" else cfg.resume
    if cfg.resume == "auto" and resume is None:
        console.print(f"[yellow]--resume auto: no checkpoint in {cfg.out}; starting from step 0[/]")
    console.print(f"[bold]{cfg.stage}[/]: {len(dataset)} rows from {len(cfg.data)} shard dir(s); "
                  f"parameters vision {counts['vision']:,} projector {counts['projector']:,} lm {counts['lm']:,}; "
                  f"trainable {counts['trainable']:,}; attention {attn}, layout {layout}, "
                  f"{'DeepSpeed ' + Path(cfg.deepspeed).name if cfg.deepspeed else 'no DeepSpeed'}", highlight=False)
    progress = RichProgress()
    trainer = LmmTrainer(model=model, args=args, train_dataset=dataset, stage=cfg.stage,
                         image_tokens=manifest["image_tokens"], special=manifest["special_tokens"],
                         data_collator=PackedCollator(tokenizer.pad_token_id, layout), callbacks=[progress])
    trainer.remove_callback(PrinterCallback)  # the rich bar prints the logs
    progress.trainer = trainer
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    elapsed = time.perf_counter() - t0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    summary = {
        "stage": cfg.stage, "out": str(out), "steps": trainer.state.global_step, "rows": len(dataset),
        "train_loss": round(result.training_loss, 6), "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None, "seconds": round(elapsed, 1), "attn": attn, "layout": layout,
        **{k: progress.last[k] for k in ("tokens_per_s", "pad_share", "image_token_share", "mfu") if k in progress.last},
    }
    save_final(trainer, cfg, tokenizer, processor, manifest, summary)
    if not cfg.keep_checkpoints and trainer.is_local_process_zero():
        for d in out.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):  # resumable states; the finished model is what remains
            shutil.rmtree(d, ignore_errors=True)
    release_engine(trainer)
    if env_before is not None:  # a world of one started here: end it, the process is as it was before the run
        _end_single_process(env_before)
    return trainer, summary


def release_engine(trainer: LmmTrainer) -> None:
    """Drop DeepSpeed's hooks and in-flight communication handles while the interpreter is fully alive.

    ZeRO-3 keeps prefetch handles and module hooks on its engine. Left to interpreter
    shutdown, a gloo/NCCL worker thread can drop the last reference to such work while
    Python finalizes; it then needs the GIL and the process aborts ("terminate called
    without an active exception") after a run that succeeded.
    """
    engine = getattr(trainer, "model_wrapped", None) if trainer.is_deepspeed_enabled else None
    if engine is not None and hasattr(engine, "destroy"):
        engine.destroy()
    gc.collect()


def finish_distributed() -> bool:
    """Leave a distributed run cleanly: free what holds communication work, wait for every rank, destroy the
    groups. True when there was a process group to leave."""
    import torch.distributed as dist

    gc.collect()
    if not (dist.is_available() and dist.is_initialized()):
        return False
    dist.barrier()
    dist.destroy_process_group()
    gc.collect()
    return True


def end_process(code: int) -> NoReturn:
    """End a distributed worker once its work is done and every rank has passed `finish_distributed`.

    The communication library's groups outlive `destroy_process_group` (DeepSpeed keeps them on every
    ZeRO-3 parameter and in module globals), so interpreter shutdown would tear down gloo/NCCL threads
    and connections in arbitrary order while the other ranks exit too; that race aborted rank 1 now and
    then ("terminate called without an active exception") after a run that had finished and saved.
    Everything is written and flushed here, so the process skips that teardown.
    """
    console.file.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def save_final(trainer: LmmTrainer, cfg, tokenizer, processor, manifest: dict, summary: dict) -> None:
    """The checkpoint directory (`lmmtrain/checkpoint.py` says what it holds), lmm_config.json last."""
    out = Path(cfg.out)
    model = trainer.model
    if getattr(cfg, "lora", False):
        model = _unwrap(trainer.model_wrapped if trainer.is_deepspeed_enabled else model, peft=False).merge_and_unload()
        trainer.model = model
    checkpoint.prepare_config(_unwrap(model), manifest["image_tokens"])
    trainer.save_model(str(out))
    if not trainer.is_world_process_zero():
        return
    template = make_template(manifest["template"]["name"], tokenizer, special_ids_of(tokenizer),
                             manifest["image_tokens"], jinja=manifest["template"].get("chat_template"))
    checkpoint.write_client_files(out, _unwrap(model).config, tokenizer, processor, template, manifest["special_tokens"])
    info = {
        "format": CHECKPOINT_FORMAT, "version": 1, "stage": cfg.stage, "parent": cfg.init,
        "trained": list(cfg.trains) if not getattr(cfg, "lora", False) else ["projector", "lm (LoRA, merged)"],
        "template": manifest["template"], "image_tokens": manifest["image_tokens"],
        "image_size": manifest.get("image_size"), "special_tokens": manifest["special_tokens"],
        "vocab_hash": manifest["tokenizer"]["vocab_hash"], "tokenizer": manifest["tokenizer"]["name"],
        "data": [{"dir": str(d), "manifest_sha256": _manifest_hash(d), "rows": read_manifest(d)["rows"]} for d in cfg.data],
        "config": {k: v for k, v in dataclasses.asdict(cfg).items()},
        "summary": {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in summary.items()},
    }
    tmp = out / f".{LMM_CONFIG}.tmp"
    tmp.write_text(json.dumps(info, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, out / LMM_CONFIG)
