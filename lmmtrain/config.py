"""One config dataclass per training stage: defaults < YAML (`--config`) < CLI flags.

Stage 1 trains only the projector (high lr); stage 2 starts from a stage-1
checkpoint and trains projector + LM (low lr, optional LoRA). Everything a run
needs is here, so a YAML file next to a checkpoint reproduces it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar


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
    logging_steps: int = 10
    resume: str | None = None  # a checkpoint-N directory, or "auto" for the latest in `out`
    report_to: str = "none"  # none | tensorboard
    workers: int = 2  # dataloader worker processes (image decoding)

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
