"""One config dataclass per training stage: defaults < YAML (`--config`) < CLI flags.

Stage 1 trains only the projector (high lr); stage 2 starts from a stage-1
checkpoint and trains projector + LM (low lr, optional LoRA). Everything a run
needs is here, so a YAML file next to a checkpoint reproduces it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import ClassVar

from lmmdata.config import ConfigError, MissingOptions

from .presets import PRESETS

PROJECTORS = ("vipllava", "mlp2x_gelu")
ATTN_CHOICES = ("auto", "sdpa", "flash_attention_2", "flex_attention", "eager")
LAYOUTS = ("auto", "flat", "rows")
REPORT_TO = ("none", "tensorboard")
LMM_CONFIG = "lmm_config.json"  # written last into a checkpoint: its presence marks a finished stage


@dataclass
class StageConfig:
    """Settings shared by both stages."""

    data: list[str] = field(default_factory=list)  # shard directories written by `lmmdata pack`
    out: str = "runs/stage"
    # model (stage 1 builds it; stage 2 loads it from `init`)
    preset: str | None = "tiny"  # built-in random-weight model; ignored when vision/lm are given
    vision: str | None = None  # CLIP/SigLIP checkpoint (path or hub name in the local cache)
    lm: str | None = None  # any AutoModelForCausalLM checkpoint
    projector: str = "vipllava"  # vipllava: LayerNorm-Linear-GELU-Linear; mlp2x_gelu: LLaVA-1.5's Linear-GELU-Linear
    init: str | None = None  # a checkpoint to start from (stage 2: the stage-1 output)
    attn: str = "auto"  # auto: flash_attention_2 when installed on GPU, else sdpa; or sdpa / flex_attention (GPU) / eager / flash_attention_2
    layout: str = "auto"  # auto: flat with flash-attention, rows otherwise; flat = one (1, total) sequence, rows = padded rows
    # optimisation
    lr: float = 1e-3
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    batch_rows: int = 4  # packed rows per device per step
    grad_accum: int = 1
    warmup_ratio: float = 0.03
    scheduler: str = "cosine"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    bf16: bool | None = None  # None: on when the GPU supports it
    gradient_checkpointing: bool = False
    deepspeed: str | None = None  # path to a DeepSpeed JSON (pipelines/deepspeed/zero2.json, zero3.json)
    # bookkeeping
    seed: int = 42
    save_steps: int = 500
    save_total_limit: int = 2
    keep_checkpoints: bool = False  # keep checkpoint-N dirs (resumable state) once the final model is saved
    logging_steps: int = 10
    resume: str | None = None  # a checkpoint-N directory, or "auto" for the latest in `out`
    report_to: str = "none"  # none | tensorboard
    workers: int = 2  # dataloader worker processes (image decoding)
    verify_shards: bool = False  # sha256 of every shard before training (sizes and row counts are always checked)

    stage: ClassVar[str] = ""
    trains: ClassVar[tuple[str, ...]] = ()


@dataclass
class Stage1Config(StageConfig):
    """Stage 1: vision and LM frozen, projector trained."""

    out: str = "runs/stage1"
    lr: float = 1e-3
    train_image_token_embeddings: bool = False  # also train the <im_start>/<image>/<im_end> input-embedding rows

    stage: ClassVar[str] = "stage1"
    trains: ClassVar[tuple[str, ...]] = ("projector",)


@dataclass
class Stage2Config(StageConfig):
    """Stage 2: vision frozen, projector + LM trained (optionally LM through LoRA)."""

    out: str = "runs/stage2"
    lr: float = 2e-5
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05

    stage: ClassVar[str] = "stage2"
    trains: ClassVar[tuple[str, ...]] = ("projector", "lm")


def check(cfg: StageConfig) -> None:
    """Every setting that can be checked without torch: the command line answers in well under a second.

    Raises MissingOptions for required options left out (a usage error), ConfigError for bad ones.
    """
    from lmmdata.hub import local_path
    from lmmdata.layout import MANIFEST

    if not cfg.data:
        raise MissingOptions(["data"])
    for d in cfg.data:
        if not (Path(d) / MANIFEST).is_file():
            raise ConfigError(f"--data {d}: not a shard directory (no {MANIFEST}); make one with `lmmdata pack`"
                              if Path(d).is_dir() else f"--data {d}: no such directory")
    if cfg.stage == "stage2" and not cfg.init:
        raise ConfigError("stage2 starts from a stage-1 checkpoint: pass --init STAGE1_OUT")
    if cfg.init:
        check_checkpoint(cfg.init, "--init")
    for name, value, allowed in (("--attn", cfg.attn, ATTN_CHOICES), ("--layout", cfg.layout, LAYOUTS),
                                 ("--report-to", cfg.report_to or "none", REPORT_TO),
                                 ("--projector", cfg.projector, PROJECTORS)):
        if value not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    if cfg.report_to == "tensorboard" and not (find_spec("tensorboard") or find_spec("tensorboardX")):
        raise ConfigError("--report-to tensorboard needs the tensorboard package: "
                          "pip install 'lmm-toolkit[tensorboard]' (or pip install tensorboard)")
    if not cfg.init and not (cfg.vision or cfg.lm) and cfg.preset not in PRESETS:
        raise ConfigError(f"--preset must be one of {', '.join(PRESETS)}, not {cfg.preset!r}")
    if bool(cfg.vision) != bool(cfg.lm) and not cfg.init:
        raise ConfigError("give both --vision and --lm (or neither, to use a --preset)")
    for name, value in (("--vision", cfg.vision), ("--lm", cfg.lm)):
        if value and not cfg.init:
            local_path(value, name)
    for name, value, low in (("--lr", cfg.lr, 0.0), ("--epochs", cfg.epochs, 0.0)):
        if not value > low:
            raise ConfigError(f"{name} must be > {low:g}, got {value}")
    for name, value in (("--batch-rows", cfg.batch_rows), ("--grad-accum", cfg.grad_accum),
                        ("--save-steps", cfg.save_steps), ("--logging-steps", cfg.logging_steps)):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    if cfg.deepspeed and not Path(cfg.deepspeed).is_file():
        raise ConfigError(f"--deepspeed {cfg.deepspeed}: no such file (see pipelines/deepspeed/)")
    if cfg.resume and cfg.resume != "auto" and not Path(cfg.resume).is_dir():
        raise ConfigError(f"--resume {cfg.resume}: no such checkpoint directory (or pass --resume auto)")
    if (Path(cfg.out) / LMM_CONFIG).exists() and not cfg.resume:
        raise ConfigError(f"{cfg.out} already holds a finished checkpoint; choose another --out or delete it")
    if getattr(cfg, "lora", False) and _zero_stage(cfg.deepspeed) == 3:
        raise ConfigError("--lora merges the adapters into whole weights at the end; use ZeRO-2 "
                          "(pipelines/deepspeed/zero2.json): LoRA leaves little optimizer state to partition anyway")
    if getattr(cfg, "train_image_token_embeddings", False):
        if cfg.weight_decay:
            raise ConfigError("train_image_token_embeddings needs weight_decay 0 (decay would move every embedding row)")
        if _zero_stage(cfg.deepspeed) == 3:
            raise ConfigError("train_image_token_embeddings masks gradients of the whole embedding; use ZeRO-2")


def check_checkpoint(path: str, what: str) -> None:
    """`path` is the output directory of a finished `lmmtrain` stage."""
    p = Path(path)
    if not p.is_dir():
        raise ConfigError(f"{what} {path}: no such directory")
    if not (p / LMM_CONFIG).is_file():
        raise ConfigError(f"{what} {path} is not a finished lmmtrain checkpoint (no {LMM_CONFIG}); "
                          "give the output directory of a completed stage")


def _zero_stage(deepspeed: str | None) -> int | None:
    if not deepspeed or not Path(deepspeed).is_file():
        return None
    try:
        return json.loads(Path(deepspeed).read_text(encoding="utf-8")).get("zero_optimization", {}).get("stage")
    except (ValueError, AttributeError) as e:
        raise ConfigError(f"--deepspeed {deepspeed}: not a DeepSpeed JSON config ({e})") from None
