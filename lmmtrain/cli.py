"""The `lmmtrain` command line: `stage1`, `stage2`, `chat`.

Exit codes: 0 done, 1 a bad setting or input (the message says how to fix it), 2 usage.
"""

from __future__ import annotations

import os
from typing import Literal, Optional

import typer

from lmmdata.cliopts import APP_SETTINGS, exit_missing, fail, option, resolve_or_exit
from lmmdata.config import ConfigError, MissingOptions, save_beside
from lmmdata.stats import console

from .config import ATTN_CHOICES, LAYOUTS, PROJECTORS, REPORT_TO, Stage1Config, Stage2Config, StageConfig, check
from .presets import PRESETS

app = typer.Typer(help="Train and chat with LLaVA-style models on lmmdata shards.", **APP_SETTINGS)

Attn = Literal[ATTN_CHOICES]  # type: ignore[valid-type]
Layout = Literal[LAYOUTS]  # type: ignore[valid-type]
Report = Literal[REPORT_TO]  # type: ignore[valid-type]
Preset = Literal[tuple(PRESETS)]  # type: ignore[valid-type]
Projector = Literal[PROJECTORS]  # type: ignore[valid-type]


def _stage(cls, config, **flags) -> None:
    """Resolve and check the config (no torch yet: mistakes answer at once), then train."""
    from rich.table import Table

    cfg = resolve_or_exit(cls, config, **flags)
    try:
        check(cfg)
    except MissingOptions as e:
        exit_missing(e)
    except ConfigError as e:
        fail(e)

    from .stages import end_process, finish_distributed, run_stage

    try:
        summary = run_stage(cfg)
    except ConfigError as e:
        fail(e)
    finally:
        distributed = finish_distributed()
    if int(os.environ.get("RANK", "0")) == 0:
        save_beside(cfg.out, cfg, summary)
        t = Table(title=f"lmmtrain {cfg.stage}: summary", title_justify="left")
        t.add_column("what")
        t.add_column("value", justify="right")
        for k, v in summary.items():
            t.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
        console.print(t)
        console.print(f"checkpoint: [bold]{cfg.out}[/]  (chat: lmmtrain chat {cfg.out})", highlight=False)
    if distributed:
        end_process(0)


# Options shared by both stages; None = not given (the YAML file or the default applies).
S, S1, S2 = StageConfig, Stage1Config, Stage2Config
ConfigOpt = typer.Option(None, "--config", "-c", help="YAML file with options; flags override it.")
DataOpt = typer.Option(None, "-d", "--data", help="Shard directory from `lmmdata pack` (repeatable). Required.")
InitOpt = option(S, "init", "--init", help="Checkpoint to start from (stage 2: the stage-1 output; required there).")
EpochsOpt = option(S, "epochs", "--epochs", help="Epochs over the shards.")
StepsOpt = option(S, "max_steps", "--max-steps", help="Stop after this many optimizer steps; overrides --epochs when > 0.")
RowsOpt = option(S, "batch_rows", "--batch-rows", help="Packed rows per device per step.")
AccumOpt = option(S, "grad_accum", "--grad-accum", help="Gradient accumulation steps.")
DsOpt = option(S, "deepspeed", "--deepspeed", help="DeepSpeed JSON (pipelines/deepspeed/zero2.json or zero3.json).", default="none")
ResumeOpt = option(S, "resume", "--resume", help='Resume from a checkpoint-N directory, or "auto" for the latest in --out.', default="start fresh")
SaveOpt = option(S, "save_steps", "--save-steps", help="Save a resumable checkpoint every N steps.")
KeepOpt = option(S, "keep_checkpoints", "--keep-checkpoints/--no-keep-checkpoints",
                 help="Keep the resumable checkpoint-N directories (with optimizer state) after the final model is saved.")
LogOpt = option(S, "logging_steps", "--logging-steps", help="Log loss and throughput every N steps.")
SeedOpt = option(S, "seed", "--seed", help="Seed for init, shuffling and dropout.")
GcOpt = option(S, "gradient_checkpointing", "--gradient-checkpointing/--no-gradient-checkpointing", help="Recompute activations.")
Bf16Opt = option(S, "bf16", "--bf16/--no-bf16", help="bf16 mixed precision.", default="on when the GPU supports it")
AttnOpt = option(S, "attn", "--attn", help="Attention kernel; auto = flash_attention_2 when installed on a GPU, else sdpa.")
LayoutOpt = option(S, "layout", "--layout", help="How packed rows form a batch; auto = flat with flash-attention, else rows.")
ReportOpt = option(S, "report_to", "--report-to", help="Where to log besides the terminal.")
WorkersOpt = option(S, "workers", "--workers", help="Dataloader worker processes.")
VerifyOpt = option(S, "verify_shards", "--verify-shards/--no-verify-shards",
                   help="Check every shard's sha256 before training (reads all shard bytes once); "
                        "sizes and row counts are always checked.")


@app.command("stage1")
def stage1_cmd(
    config: Optional[str] = ConfigOpt, data: Optional[list[str]] = DataOpt,
    out: Optional[str] = option(S1, "out", "--out", "-o", help="Output directory (checkpoints + final model)."),
    preset: Optional[Preset] = option(S1, "preset", "--preset", help="Built-in random-weight model (bench: CLIP-L/336 + Qwen2.5-0.5B shapes); ignored with --vision/--lm."),
    vision: Optional[str] = option(S1, "vision", "--vision", help="CLIP/SigLIP checkpoint (path or cached hub name).", default="the preset's"),
    lm: Optional[str] = option(S1, "lm", "--lm", help="Causal LM checkpoint (path, cached hub name or .gguf file).", default="the preset's"),
    projector: Optional[Projector] = option(S1, "projector", "--projector", help="vipllava = LayerNorm MLP (DESIGN.md); mlp2x_gelu = LLaVA-1.5's."),
    init: Optional[str] = InitOpt, lr: Optional[float] = option(S1, "lr", "--lr", help="Peak learning rate."),
    epochs: Optional[float] = EpochsOpt,
    max_steps: Optional[int] = StepsOpt, batch_rows: Optional[int] = RowsOpt, grad_accum: Optional[int] = AccumOpt,
    deepspeed: Optional[str] = DsOpt, resume: Optional[str] = ResumeOpt, save_steps: Optional[int] = SaveOpt,
    logging_steps: Optional[int] = LogOpt, seed: Optional[int] = SeedOpt, gradient_checkpointing: Optional[bool] = GcOpt,
    bf16: Optional[bool] = Bf16Opt, attn: Optional[Attn] = AttnOpt, layout: Optional[Layout] = LayoutOpt,
    report_to: Optional[Report] = ReportOpt, workers: Optional[int] = WorkersOpt, keep_checkpoints: Optional[bool] = KeepOpt,
    verify_shards: Optional[bool] = VerifyOpt,
    train_image_token_embeddings: Optional[bool] = option(
        S1, "train_image_token_embeddings", "--train-image-token-embeddings/--no-train-image-token-embeddings",
        help="Also train the input-embedding rows of <im_start>/<image>/<im_end> (the rest of the LM stays frozen)."),
) -> None:
    """Stage 1: train the projector only (vision tower and LM frozen)."""
    _stage(Stage1Config, config, data=data or None, out=out, preset=preset, vision=vision, lm=lm, projector=projector,
           init=init, lr=lr, epochs=epochs, max_steps=max_steps, batch_rows=batch_rows, grad_accum=grad_accum,
           deepspeed=deepspeed, resume=resume, save_steps=save_steps, logging_steps=logging_steps, seed=seed,
           gradient_checkpointing=gradient_checkpointing, bf16=bf16, attn=attn, layout=layout, report_to=report_to,
           workers=workers, keep_checkpoints=keep_checkpoints, verify_shards=verify_shards, train_image_token_embeddings=train_image_token_embeddings)


@app.command("stage2")
def stage2_cmd(
    config: Optional[str] = ConfigOpt, data: Optional[list[str]] = DataOpt,
    out: Optional[str] = option(S2, "out", "--out", "-o", help="Output directory (checkpoints + final model)."),
    init: Optional[str] = InitOpt, lr: Optional[float] = option(S2, "lr", "--lr", help="Peak learning rate."),
    epochs: Optional[float] = EpochsOpt,
    max_steps: Optional[int] = StepsOpt, batch_rows: Optional[int] = RowsOpt, grad_accum: Optional[int] = AccumOpt,
    deepspeed: Optional[str] = DsOpt, resume: Optional[str] = ResumeOpt, save_steps: Optional[int] = SaveOpt,
    logging_steps: Optional[int] = LogOpt, seed: Optional[int] = SeedOpt, gradient_checkpointing: Optional[bool] = GcOpt,
    bf16: Optional[bool] = Bf16Opt, attn: Optional[Attn] = AttnOpt, layout: Optional[Layout] = LayoutOpt,
    report_to: Optional[Report] = ReportOpt, workers: Optional[int] = WorkersOpt, keep_checkpoints: Optional[bool] = KeepOpt,
    verify_shards: Optional[bool] = VerifyOpt,
    lora: Optional[bool] = option(S2, "lora", "--lora/--no-lora", help="Train the LM through LoRA adapters (merged at the end)."),
    lora_r: Optional[int] = option(S2, "lora_r", "--lora-r", help="LoRA rank."),
) -> None:
    """Stage 2: train projector + LM (vision tower frozen), starting from --init."""
    _stage(Stage2Config, config, data=data or None, out=out, init=init, lr=lr, epochs=epochs, max_steps=max_steps,
           batch_rows=batch_rows, grad_accum=grad_accum, deepspeed=deepspeed, resume=resume, save_steps=save_steps,
           logging_steps=logging_steps, seed=seed, gradient_checkpointing=gradient_checkpointing, bf16=bf16, attn=attn,
           layout=layout, report_to=report_to, workers=workers, keep_checkpoints=keep_checkpoints, verify_shards=verify_shards, lora=lora, lora_r=lora_r)


@app.command("chat")
def chat_cmd(
    checkpoint: str = typer.Argument(..., help="Output directory of `lmmtrain stage1` or `stage2`."),
    image: Optional[list[str]] = typer.Option(None, "--image", "-i", help="Image for the first message (repeatable)."),
    prompt: Optional[list[str]] = typer.Option(None, "--prompt", "-p",
                                               help="Ask these in turn and exit (repeatable); otherwise interactive."),
    system: Optional[str] = typer.Option(None, "--system", help="System prompt. [default: the template's own]"),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", help="Longest answer in tokens."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... [default: cuda when available]"),
) -> None:
    """Multi-turn chat; attach images with --image or `/image PATH` at any turn, or none for pure text."""
    from .config import check_checkpoint
    from .messages import ChatError, check_image, check_script

    try:  # every argument is checked before the model loads
        check_checkpoint(checkpoint, "checkpoint")
        if prompt:
            check_script(prompt, image or [])
        for path in image or []:
            check_image(path)
    except (ChatError, ConfigError) as e:
        fail(e)

    from .chat import chat_loop, load_chat_model

    try:
        chat = load_chat_model(checkpoint, device=device)
        answers = chat_loop(chat, images=image or [], prompts=prompt or [], system=system, max_new_tokens=max_new_tokens)
    except (ChatError, ConfigError, ValueError, OSError) as e:
        fail(e)
    console.print(f"[dim]{len(answers)} answer(s)[/]")


@app.command("eval-pope")
def eval_pope_cmd(
    checkpoint: str = typer.Argument(..., help="Output directory of `lmmtrain stage1` or `stage2`."),
    data: str = typer.Option(..., "--data", help="Held-out LLaVA records (one image + a caption-like answer)."),
    image_root: Optional[str] = typer.Option(None, "--image-root", help="Where the images are. [default: the records' folder]"),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Write every question, answer and verdict (JSONL)."),
    per_record: int = typer.Option(1, "--per-record", help="Mismatched questions per record (matched ones balance them)."),
    hard: bool = typer.Option(False, "--hard", help="Lexically close mismatched captions (POPE's adversarial flavour)."),
    seed: int = typer.Option(0, "--seed", help="Seed for picking mismatched captions."),
    limit: Optional[int] = typer.Option(None, "--limit", help="At most this many questions. [default: all]"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... [default: cuda when available]"),
) -> None:
    """POPE-style yes/no hallucination check: accuracy, precision, recall, F1, yes-ratio."""
    import json

    from rich.table import Table

    from lmmdata.jsonio import check_record_files

    from .config import check_checkpoint
    from .pope import PopeConfig

    try:
        check_checkpoint(checkpoint, "checkpoint")
        check_record_files([data], out)
    except ConfigError as e:
        fail(e)

    from .chat import ChatError
    from .pope import eval_pope

    cfg = PopeConfig(checkpoint=checkpoint, data=data, image_root=image_root, out=out, per_record=per_record,
                     hard=hard, seed=seed, limit=limit, device=device)
    try:
        scores = eval_pope(cfg)
    except (ChatError, ConfigError, ValueError, OSError) as e:
        fail(e)
    t = Table(title="lmmtrain eval-pope: summary", title_justify="left")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in scores.items():
        t.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    console.print(t)
    print(json.dumps(scores))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
