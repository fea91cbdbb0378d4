"""The `lmmdata` command line: thin typer wrappers that fill a config and run a step.

Exit codes (all commands):
  0  finished; bad records, if any, were skipped and are counted in the summary
  1  a bad setting or unusable input file (message says how to fix it); nothing written
  2  wrong command-line usage
  3  finished, but --strict was given and records were skipped
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Optional

import typer

from .config import ConfigError, resolve, save_beside
from .stats import Stats, console

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Turn LLaVA-format data into Chinese, mixed, packed training shards.",
    pretty_exceptions_enable=False,
)

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML file with options; flags override it.")
RejectsOpt = typer.Option(None, "--rejects", help="Write every skipped record (where, id, reason) to this JSONL file.")
StrictOpt = typer.Option(False, "--strict", help="Exit with code 3 when any record was skipped.")


def run_step(name: str, cfg, step: Callable, strict: bool, out_for_config: str | None = None) -> Stats:
    """Run one step with rejects file, summary, saved config and exit codes."""
    rejects_path = getattr(cfg, "rejects", None)
    with contextlib.ExitStack() as stack:
        stats = Stats(name)
        if rejects_path:
            Path(rejects_path).parent.mkdir(parents=True, exist_ok=True)
            stats.rejects = stack.enter_context(open(rejects_path, "w", encoding="utf-8"))
        try:
            step(cfg, stats)
        except (ConfigError, FileNotFoundError) as e:
            console.print(f"[bold red]error:[/] {e}", highlight=False)
            raise typer.Exit(1)
    stats.print_summary()
    if out_for_config:
        save_beside(out_for_config, cfg, stats.as_dict())
    if strict and stats.n_skipped:
        console.print(f"[red]--strict: {stats.n_skipped} record(s) skipped[/]")
        raise typer.Exit(3)
    return stats


def _resolve(cls, config, **kw):
    try:
        return resolve(cls, config, **kw)
    except ConfigError as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False)
        raise typer.Exit(1)


@app.command("mix-text")
def mix_text_cmd(
    mm_in: Optional[str] = typer.Argument(None, metavar="MM_IN", help="LLaVA records (.json/.jsonl)."),
    text_in: Optional[list[str]] = typer.Argument(None, metavar="TEXT_IN...", help="Alpaca / ShareGPT / messages files."),
    out: Optional[str] = typer.Option(None, "-o", "--out", help="Output .json or .jsonl."),
    ratio: Optional[float] = typer.Option(None, help="Fraction of text-only records in the output [default: 0.2]."),
    seed: Optional[int] = typer.Option(None, help="Random seed [default: 0]."),
    allow_repeat: Optional[bool] = typer.Option(None, "--allow-repeat", help="Reuse text records when there are too few."),
    source: Optional[str] = typer.Option(None, help='"source" value for added records; "file" = the text file name [default: text].'),
    rejects: Optional[str] = RejectsOpt,
    config: Optional[str] = ConfigOpt,
    strict: bool = StrictOpt,
) -> None:
    """Mix text-only instructions into multimodal records (against forgetting)."""
    from .mix import MixConfig, mix_text

    cfg = _resolve(MixConfig, config, mm=mm_in, text=text_in or None, out=out, ratio=ratio, seed=seed,
                   allow_repeat=allow_repeat, source=source, rejects=rejects)
    run_step("mix-text", cfg, mix_text, strict, cfg.out)


@app.command("make-negatives")
def make_negatives_cmd(
    inp: Optional[str] = typer.Argument(None, metavar="IN", help="Captioned LLaVA records."),
    out: Optional[str] = typer.Option(None, "-o", "--out", help="Output .json or .jsonl."),
    per_record: Optional[int] = typer.Option(None, "--per-record", help="Negatives per captioned record [default: 1]."),
    positives: Optional[float] = typer.Option(None, help="Share of generated samples that are matched positives [default: 0.25]."),
    hard: Optional[bool] = typer.Option(None, "--hard", help="Pick lexically close captions (char n-grams) as mismatches."),
    lang: Optional[str] = typer.Option(None, help="Template language: zh, en or auto [default: auto]."),
    seed: Optional[int] = typer.Option(None, help="Random seed [default: 0]."),
    only_new: Optional[bool] = typer.Option(None, "--only-new", help="Write only generated records, not the input ones."),
    caption_key: Optional[str] = typer.Option(None, help="Read captions from this key instead of the first answer."),
    any_first_answer: Optional[bool] = typer.Option(None, "--any-first-answer", help="Take the first answer as the caption even when the first question does not ask for a description."),
    rejects: Optional[str] = RejectsOpt,
    config: Optional[str] = ConfigOpt,
    strict: bool = StrictOpt,
) -> None:
    """Add mismatched image/caption questions (and matched ones) against hallucination."""
    from .negatives import NegativesConfig, make_negatives

    cfg = _resolve(NegativesConfig, config, inp=inp, out=out, per_record=per_record, positives=positives, hard=hard,
                   lang=lang, seed=seed, only_new=only_new, caption_key=caption_key,
                   any_first_answer=any_first_answer, rejects=rejects)
    run_step("make-negatives", cfg, make_negatives, strict, cfg.out)


@app.command("translate")
def translate_cmd(
    inp: Optional[str] = typer.Argument(None, metavar="IN", help="LLaVA records (.json/.jsonl)."),
    out: Optional[str] = typer.Option(None, "-o", "--out", help="Output .json or .jsonl."),
    src: Optional[str] = typer.Option(None, "--from", help="Source language code [default: en]."),
    tgt: Optional[str] = typer.Option(None, "--to", help="Target language code [default: zh]."),
    package: Optional[str] = typer.Option(None, "--package", help="Install this .argosmodel file first."),
    cache: Optional[str] = typer.Option(None, "--cache", help="Translation cache directory [default: ~/.cache/lmm-toolkit/translate]."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Distinct strings per committed chunk [default: 512]."),
    workers: Optional[int] = typer.Option(None, "--workers", help="CTranslate2 parallel translators [default: all cores]."),
    beam_size: Optional[int] = typer.Option(None, "--beam-size", help="Beam size [default: 4, as argos]."),
    roles: Optional[str] = typer.Option(None, "--roles", help="Comma-separated roles to translate [default: human,gpt]."),
    protect: Optional[list[str]] = typer.Option(None, "--protect", help="Extra regex whose matches are kept verbatim (repeatable)."),
    resume: Optional[bool] = typer.Option(None, "--resume/--no-resume", help="Continue an interrupted run [default: resume]."),
    keep_original: Optional[bool] = typer.Option(None, "--keep-original", help="Keep the source text as conversations_<from>."),
    drop_suspicious: Optional[bool] = typer.Option(None, "--drop-suspicious", help="Drop records whose translation looks wrong."),
    rejects: Optional[str] = RejectsOpt,
    config: Optional[str] = ConfigOpt,
    strict: bool = StrictOpt,
) -> None:
    """Translate LLaVA records (English -> Chinese by default) with Argos Translate."""
    from .translate import TranslateConfig, translate_file

    cfg = _resolve(TranslateConfig, config, inp=inp, out=out, src=src, tgt=tgt, package=package, cache=cache,
                   batch_size=batch_size, workers=workers, beam_size=beam_size,
                   roles=roles.split(",") if roles else None, protect=protect or None, resume=resume,
                   keep_original=keep_original, drop_suspicious=drop_suspicious, rejects=rejects)
    run_step("translate", cfg, translate_file, strict, cfg.out)


@app.command("pack")
def pack_cmd(
    inputs: Optional[list[str]] = typer.Argument(None, metavar="IN...", help="LLaVA records (.json/.jsonl)."),
    out: Optional[str] = typer.Option(None, "-o", "--out", help="Output shard directory."),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="Tokenizer directory, tokenizer.json, .gguf model file, cached hub name, or 'qwen2.5' (built in)."),
    image_root: Optional[str] = typer.Option(None, "--image-root", help="Directory that record image paths are relative to."),
    image_tokens: Optional[int] = typer.Option(None, "--image-tokens", help="Tokens per image (N)."),
    vision: Optional[str] = typer.Option(None, "--vision", help="Vision config (file/dir); N = (image_size/patch_size)^2 (SigLIP: minus 1)."),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="Tokens per packed row [default: 2048]."),
    template: Optional[str] = typer.Option(None, "--template", help="auto (tokenizer's own), chatml, qwen2, llama3 or vicuna [default: auto]."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Downscale images so the short side is PX, re-encoded."),
    rows_per_shard: Optional[int] = typer.Option(None, "--rows-per-shard", help="Rows per shard file [default: 1024]."),
    seed: Optional[int] = typer.Option(None, help="Seed for the row order [default: 0]."),
    truncate: Optional[bool] = typer.Option(None, "--truncate", help="Cut over-long text-only samples instead of skipping them."),
    buffer: Optional[int] = typer.Option(None, "--buffer", help="Samples sorted together by the packer [default: 4096]."),
    refine: Optional[int] = typer.Option(None, "--refine", help="Local-search trials per 512 rows; 0 = plain best-fit decreasing [default: 32]."),
    overwrite: Optional[bool] = typer.Option(None, "--overwrite", help="Replace an existing output directory."),
    rejects: Optional[str] = RejectsOpt,
    config: Optional[str] = ConfigOpt,
    strict: bool = StrictOpt,
) -> None:
    """Tokenize with a chat template, expand images and pack into 2048-token Arrow shards."""
    from .pack import PackConfig, pack

    cfg = _resolve(PackConfig, config, inputs=inputs or None, out=out, tokenizer=tokenizer, image_root=image_root,
                   image_tokens=image_tokens, vision=vision, seq_len=seq_len, template=template,
                   image_size=image_size, rows_per_shard=rows_per_shard, seed=seed, truncate=truncate,
                   buffer=buffer, refine=refine, overwrite=overwrite, rejects=rejects)
    run_step("pack", cfg, pack, strict)
    console.print(f"shards in [bold]{cfg.out}[/]; look at them with: lmmdata inspect {cfg.out} --stats", highlight=False)


@app.command("inspect")
def inspect_cmd(
    shard_dir: str = typer.Argument(..., metavar="OUT_DIR", help="A shard directory made by `lmmdata pack`."),
    row: Optional[int] = typer.Option(None, "--row", help="Show this row (0-based) decoded."),
    show_stats: bool = typer.Option(False, "--stats", help="Show counts, histograms and skip reasons."),
    verify: bool = typer.Option(False, "--verify", help="Check every shard's sha256 against the manifest."),
) -> None:
    """Show shards: a decoded row (trained spans coloured) and/or statistics."""
    from rich.console import Console

    from . import shards, view

    out = Console()
    try:
        if verify:
            shards.verify(shard_dir)
            out.print(f"[green]ok[/]: every shard in {shard_dir} matches its checksum")
        if show_stats or (row is None and not verify):
            view.show_stats(shard_dir, out)
        if row is not None:
            view.show_row(shard_dir, row, out)
    except (shards.ShardError, IndexError) as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False)
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
