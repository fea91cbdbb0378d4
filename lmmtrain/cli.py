"""The `lmmtrain` command line: `stage1`, `stage2`, `chat`.

Exit codes: 0 done, 1 a bad setting or input (the message says how to fix it), 2 usage.
"""

from __future__ import annotations

import os
from typing import Optional

import typer

from lmmdata.config import ConfigError, resolve, save_beside
from lmmdata.stats import console

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train and chat with LLaVA-style models on lmmdata shards.")


def _stage(cls, config, **flags) -> None:
    from rich.table import Table

    from .stages import run_stage

    try:
        cfg = resolve(cls, config, **flags)
        summary = run_stage(cfg)
    except ConfigError as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False)
        raise typer.Exit(1)
    finally:
        _end_distributed()
    if int(os.environ.get("RANK", "0")) != 0:
        return
    save_beside(cfg.out, cfg, summary)
    t = Table(title=f"lmmtrain {cfg.stage}: summary", title_justify="left")
    t.add_column("what")
    t.add_column("value", justify="right")
    for k, v in summary.items():
        t.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    console.print(t)
    console.print(f"checkpoint: [bold]{cfg.out}[/]  (chat: lmmtrain chat {cfg.out})", highlight=False)


def _end_distributed() -> None:
    """Leave the process group cleanly (an open gloo/NCCL group can abort the interpreter at exit)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


# Options shared by both stages; None = not given (the YAML file or the default applies).
ConfigOpt = typer.Option(None, "--config", "-c", help="YAML file with options; flags override it.")
DataOpt = typer.Option(None, "--data", "-d", help="Shard directory from `lmmdata pack` (repeatable).")
OutOpt = typer.Option(None, "--out", "-o", help="Output directory (checkpoints + final model).")
InitOpt = typer.Option(None, "--init", help="Checkpoint to start from (stage 2: the stage-1 output).")
LrOpt = typer.Option(None, "--lr", help="Peak learning rate [stage1 1e-3, stage2 2e-5].")
EpochsOpt = typer.Option(None, "--epochs", help="Epochs over the shards [1].")
StepsOpt = typer.Option(None, "--max-steps", help="Stop after this many optimizer steps (overrides --epochs).")
RowsOpt = typer.Option(None, "--batch-rows", help="Packed rows per device per step [4].")
AccumOpt = typer.Option(None, "--grad-accum", help="Gradient accumulation steps [1].")
DsOpt = typer.Option(None, "--deepspeed", help="DeepSpeed JSON (pipelines/deepspeed/zero2.json or zero3.json).")
ResumeOpt = typer.Option(None, "--resume", help='Resume from a checkpoint-N directory, or "auto" for the latest in --out.')
SaveOpt = typer.Option(None, "--save-steps", help="Save a resumable checkpoint every N steps [500].")
LogOpt = typer.Option(None, "--logging-steps", help="Log loss and throughput every N steps [10].")
SeedOpt = typer.Option(None, "--seed", help="Seed for init, shuffling and dropout [42].")
GcOpt = typer.Option(None, "--gradient-checkpointing/--no-gradient-checkpointing", help="Recompute activations.")
Bf16Opt = typer.Option(None, "--bf16/--no-bf16", help="bf16 mixed precision [on when the GPU supports it].")
AttnOpt = typer.Option(None, "--attn", help="auto | flash_attention_2 | sdpa | eager.")
LayoutOpt = typer.Option(None, "--layout", help="auto | flat | rows (how packed rows form a batch).")
ReportOpt = typer.Option(None, "--report-to", help="none | tensorboard.")
WorkersOpt = typer.Option(None, "--workers", help="Dataloader workers [2].")


@app.command("stage1")
def stage1_cmd(
    config: Optional[str] = ConfigOpt, data: Optional[list[str]] = DataOpt, out: Optional[str] = OutOpt,
    preset: Optional[str] = typer.Option(None, "--preset", help="Built-in random-weight model: tiny | small | bench (CLIP-L/336 + Qwen2.5-0.5B shapes) [tiny]."),
    vision: Optional[str] = typer.Option(None, "--vision", help="CLIP/SigLIP checkpoint (path or cached hub name)."),
    lm: Optional[str] = typer.Option(None, "--lm", help="Causal LM checkpoint (path, cached hub name or .gguf file)."),
    projector: Optional[str] = typer.Option(None, "--projector", help="vipllava (LayerNorm MLP) | mlp2x_gelu."),
    init: Optional[str] = InitOpt, lr: Optional[float] = LrOpt, epochs: Optional[float] = EpochsOpt,
    max_steps: Optional[int] = StepsOpt, batch_rows: Optional[int] = RowsOpt, grad_accum: Optional[int] = AccumOpt,
    deepspeed: Optional[str] = DsOpt, resume: Optional[str] = ResumeOpt, save_steps: Optional[int] = SaveOpt,
    logging_steps: Optional[int] = LogOpt, seed: Optional[int] = SeedOpt, gradient_checkpointing: Optional[bool] = GcOpt,
    bf16: Optional[bool] = Bf16Opt, attn: Optional[str] = AttnOpt, layout: Optional[str] = LayoutOpt,
    report_to: Optional[str] = ReportOpt, workers: Optional[int] = WorkersOpt,
    train_image_token_embeddings: Optional[bool] = typer.Option(
        None, "--train-image-token-embeddings/--no-train-image-token-embeddings",
        help="Also train the input-embedding rows of <im_start>/<image>/<im_end> (the rest of the LM stays frozen)."),
) -> None:
    """Stage 1: train the projector only (vision tower and LM frozen)."""
    from .config import Stage1Config

    _stage(Stage1Config, config, data=data or None, out=out, preset=preset, vision=vision, lm=lm, projector=projector,
           init=init, lr=lr, epochs=epochs, max_steps=max_steps, batch_rows=batch_rows, grad_accum=grad_accum,
           deepspeed=deepspeed, resume=resume, save_steps=save_steps, logging_steps=logging_steps, seed=seed,
           gradient_checkpointing=gradient_checkpointing, bf16=bf16, attn=attn, layout=layout, report_to=report_to,
           workers=workers, train_image_token_embeddings=train_image_token_embeddings)


@app.command("stage2")
def stage2_cmd(
    config: Optional[str] = ConfigOpt, data: Optional[list[str]] = DataOpt, out: Optional[str] = OutOpt,
    init: Optional[str] = InitOpt, lr: Optional[float] = LrOpt, epochs: Optional[float] = EpochsOpt,
    max_steps: Optional[int] = StepsOpt, batch_rows: Optional[int] = RowsOpt, grad_accum: Optional[int] = AccumOpt,
    deepspeed: Optional[str] = DsOpt, resume: Optional[str] = ResumeOpt, save_steps: Optional[int] = SaveOpt,
    logging_steps: Optional[int] = LogOpt, seed: Optional[int] = SeedOpt, gradient_checkpointing: Optional[bool] = GcOpt,
    bf16: Optional[bool] = Bf16Opt, attn: Optional[str] = AttnOpt, layout: Optional[str] = LayoutOpt,
    report_to: Optional[str] = ReportOpt, workers: Optional[int] = WorkersOpt,
    lora: Optional[bool] = typer.Option(None, "--lora/--no-lora", help="Train the LM through LoRA adapters (merged at the end)."),
    lora_r: Optional[int] = typer.Option(None, "--lora-r", help="LoRA rank [16]."),
) -> None:
    """Stage 2: train projector + LM (vision tower frozen), starting from --init."""
    from .config import Stage2Config

    _stage(Stage2Config, config, data=data or None, out=out, init=init, lr=lr, epochs=epochs, max_steps=max_steps,
           batch_rows=batch_rows, grad_accum=grad_accum, deepspeed=deepspeed, resume=resume, save_steps=save_steps,
           logging_steps=logging_steps, seed=seed, gradient_checkpointing=gradient_checkpointing, bf16=bf16, attn=attn,
           layout=layout, report_to=report_to, workers=workers, lora=lora, lora_r=lora_r)


@app.command("chat")
def chat_cmd(
    checkpoint: str = typer.Argument(..., help="Output directory of `lmmtrain stage1` or `stage2`."),
    image: Optional[list[str]] = typer.Option(None, "--image", "-i", help="Image for the first message (repeatable)."),
    prompt: Optional[list[str]] = typer.Option(None, "--prompt", "-p",
                                               help="Ask these in turn and exit (repeatable); otherwise interactive."),
    system: Optional[str] = typer.Option(None, "--system", help="System prompt."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", help="Longest answer in tokens."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... [cuda when available]."),
) -> None:
    """Multi-turn chat; attach images with --image or `/image PATH` at any turn, or none for pure text."""
    from .chat import ChatError, chat_loop, load_chat_model

    try:
        chat = load_chat_model(checkpoint, device=device)
        answers = chat_loop(chat, images=image or [], prompts=prompt or [], system=system, max_new_tokens=max_new_tokens)
    except (ChatError, ConfigError, ValueError, OSError) as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False)
        raise typer.Exit(1)
    console.print(f"[dim]{len(answers)} answer(s)[/]")


@app.command("eval-pope")
def eval_pope_cmd(
    checkpoint: str = typer.Argument(..., help="Output directory of `lmmtrain stage1` or `stage2`."),
    data: str = typer.Option(..., "--data", help="Held-out LLaVA records (one image + a caption-like answer)."),
    image_root: Optional[str] = typer.Option(None, "--image-root", help="Where the images are [the records' folder]."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Write every question, answer and verdict (JSONL)."),
    per_record: int = typer.Option(1, "--per-record", help="Mismatched questions per record (matched ones balance them)."),
    hard: bool = typer.Option(False, "--hard", help="Lexically close mismatched captions (POPE's adversarial flavour)."),
    seed: int = typer.Option(0, "--seed"),
    limit: Optional[int] = typer.Option(None, "--limit", help="At most this many questions."),
    device: Optional[str] = typer.Option(None, "--device"),
) -> None:
    """POPE-style yes/no hallucination check: accuracy, precision, recall, F1, yes-ratio."""
    import json

    from rich.table import Table

    from .chat import ChatError
    from .pope import PopeConfig, eval_pope

    cfg = PopeConfig(checkpoint=checkpoint, data=data, image_root=image_root, out=out, per_record=per_record,
                     hard=hard, seed=seed, limit=limit, device=device)
    try:
        scores = eval_pope(cfg)
    except (ChatError, ConfigError, ValueError, OSError) as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False)
        raise typer.Exit(1)
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
