"""The `lmmdata` command line: thin typer wrappers that fill a config and run a step.

Exit codes (all commands):
  0  finished; bad records, if any, were skipped and are counted in the summary
  1  a bad setting or unusable input file (message says how to fix it); nothing written
  2  wrong command-line usage
  3  finished, but --strict was given and records were skipped
"""

from __future__ import annotations

from typing import Callable, Literal, Optional

import typer

from .cliopts import APP_SETTINGS, fail, option, resolve_or_exit
from .config import ConfigError, save_beside
from .mix import MixConfig
from .negatives import LANGS, NegativesConfig
from .pack import PackConfig
from .stats import Stats, console
from .template import NAMES as TEMPLATES
from .translate import ComputeType, TranslateConfig

app = typer.Typer(help="Turn LLaVA-format data into Chinese, mixed, packed training shards.", **APP_SETTINGS)

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML file with options; flags override it.")
RejectsOpt = typer.Option(None, "--rejects", help="Write every skipped record (where, id, reason) to this JSONL file.")
StrictOpt = typer.Option(False, "--strict", help="Exit with code 3 when any record was skipped.")
Template = Literal[TEMPLATES]  # type: ignore[valid-type]


def run_step(name: str, cfg, step: Callable, strict: bool, out_for_config: str | None = None) -> Stats:
    """Run one step with rejects file, summary, saved config and exit codes."""
    stats = Stats(name, rejects_path=getattr(cfg, "rejects", None))
    try:
        step(cfg, stats)
    except (ConfigError, FileNotFoundError) as e:
        fail(e)
    finally:
        stats.close_rejects()
    stats.print_summary()
    if out_for_config:
        save_beside(out_for_config, cfg, stats.as_dict())
    if strict and stats.n_skipped:
        console.print(f"[red]--strict: {stats.n_skipped} record(s) skipped[/]")
        raise typer.Exit(3)
    return stats


@app.command("mix-text")
def mix_text_cmd(
    mm: Optional[str] = typer.Argument(None, metavar="MM_IN", help="LLaVA records (.json/.jsonl)."),
    text: Optional[list[str]] = typer.Argument(None, metavar="TEXT_IN...", help="Alpaca / ShareGPT / messages files."),
    out: Optional[str] = typer.Option(None, "-o", "--out", help="Output .json or .jsonl."),
    ratio: Optional[float] = option(MixConfig, "ratio", "--ratio", help="Fraction of text-only records in the output, in [0, 1)."),
    seed: Optional[int] = option(MixConfig, "seed", "--seed", help="Random seed."),
    allow_repeat: Optional[bool] = option(MixConfig, "allow_repeat", "--allow-repeat", help="Reuse text records when there are too few."),
    source: Optional[str] = option(MixConfig, "source", "--source", help='"source" value for added records; "file" = the text file name.'),
    rejects: Optional[str] = RejectsOpt,
    config: Optional[str] = ConfigOpt,
    strict: bool = StrictOpt,
) -> None:
    """Mix text-only instructions into multimodal records (against forgetting)."""
    from .mix import mix_text

    cfg = resolve_or_exit(MixConfig, config, mm=mm, text=text or None, out=out, ratio=ratio, seed=seed,
                   allow_repeat=allow_repeat, source=source, rejects=rejects)
    run_step("mix-text", cfg, mix_text, strict, cfg.out)


@app.command("make-negatives")
def make_negatives_cmd(
    inp: Optional[str] = typer.Argument(None, metavar="IN", help="Captioned LLaVA records."),
    out: Optional[str] = typer.Option(None, "-o", "--out", help="Output .json or .jsonl."),
    per_record: Optional[int] = option(NegativesConfig, "per_record", "--per-record", help="Negatives per captioned record (>= 0)."),
    positives: Optional[float] = option(NegativesConfig, "positives", "--positives", help="Share of generated samples that are matched positives, in [0, 1)."),
    hard: Optional[bool] = option(NegativesConfig, "hard", "--hard", help="Pick lexically close captions (char n-grams) as mismatches."),
    lang: Optional[Literal[LANGS]] = option(NegativesConfig, "lang", "--lang", help="Template language (auto: the record's lang key, else CJK in the caption)."),  # type: ignore[valid-type]
    seed: Optional[int] = option(NegativesConfig, "seed", "--seed", help="Random seed."),
    only_new: Optional[bool] = option(NegativesConfig, "only_new", "--only-new", help="Write only generated records, not the input ones."),
    caption_key: Optional[str] = option(NegativesConfig, "caption_key", "--caption-key", help="Read captions from this key instead of the first answer.", default="the first answer"),
    any_first_answer: Optional[bool] = option(NegativesConfig, "any_first_answer", "--any-first-answer", help="Take the first answer as the caption even when the first question does not ask for a description."),
    rejects: Optional[str] = RejectsOpt,
    config: Optional[str] = ConfigOpt,
    strict: bool = StrictOpt,
) -> None:
    """Add mismatched image/caption questions (and matched ones) against hallucination."""
    from .negatives import make_negatives

    cfg = resolve_or_exit(NegativesConfig, config, inp=inp, out=out, per_record=per_record, positives=positives, hard=hard,
                   lang=lang, seed=seed, only_new=only_new, caption_key=caption_key,
                   any_first_answer=any_first_answer, rejects=rejects)
    run_step("make-negatives", cfg, make_negatives, strict, cfg.out)


@app.command("translate")
def translate_cmd(
    inp: Optional[str] = typer.Argument(None, metavar="IN", help="LLaVA records (.json/.jsonl)."),
    out: Optional[str] = typer.Option(None, "-o", "--out", help="Output .json or .jsonl."),
    src: Optional[str] = option(TranslateConfig, "src", "--from", help="Source language code."),
    tgt: Optional[str] = option(TranslateConfig, "tgt", "--to", help="Target language code."),
    backend: Optional[Literal["argos", "ct2", "openai"]] = option(TranslateConfig, "backend", "--backend", help="Engine: an Argos package, a CTranslate2 model directory, or an LLM behind OpenAI-compatible servers."),
    model: Optional[str] = option(TranslateConfig, "model", "--model", help="ct2: the model directory; openai: the model name the server serves."),
    base_url: Optional[list[str]] = option(TranslateConfig, "base_url", "--base-url", help="openai: a server, e.g. http://localhost:8000/v1 (repeat for a fleet)."),
    api_key_env: Optional[str] = option(TranslateConfig, "api_key_env", "--api-key-env", help="openai: environment variable with the API key."),
    concurrency: Optional[int] = option(TranslateConfig, "concurrency", "--concurrency", help="openai: requests in flight over all servers."),
    prompt: Optional[str] = option(TranslateConfig, "prompt", "--prompt", help="openai: YAML with system/user/retry prompts (user has {text}).", default="built in"),
    temperature: Optional[float] = option(TranslateConfig, "temperature", "--temperature", help="openai: sampling temperature (0 = greedy)."),
    max_tokens: Optional[int] = option(TranslateConfig, "max_tokens", "--max-tokens", help="openai: answer length cap per string."),
    retries: Optional[int] = option(TranslateConfig, "retries", "--retries", help="openai: follow-ups for an answer the quality gate flags."),
    timeout: Optional[float] = option(TranslateConfig, "timeout", "--timeout", help="openai: seconds per request."),
    device: Optional[Literal["cpu", "cuda"]] = option(TranslateConfig, "device", "--device", help="argos/ct2: where CTranslate2 runs."),
    compute_type: Optional[ComputeType] = option(TranslateConfig, "compute_type", "--compute-type", help="argos/ct2: CTranslate2 precision (default: the model's own; float16/bfloat16 ~1.4-1.9x faster on a GPU)."),
    target_prefix: Optional[str] = option(TranslateConfig, "target_prefix", "--target-prefix", help="ct2: target token a multilingual model needs (e.g. >>cmn_Hans<<)."),
    package: Optional[str] = option(TranslateConfig, "package", "--package", help="argos: install this .argosmodel file first.", default="an installed package"),
    cache: Optional[str] = option(TranslateConfig, "cache", "--cache", help="Translation cache directory.", default="~/.cache/lmm-toolkit/translate"),
    batch_size: Optional[int] = option(TranslateConfig, "batch_size", "--batch-size", help="Distinct strings per committed chunk."),
    workers: Optional[int] = option(TranslateConfig, "workers", "--workers", help="CTranslate2 parallel translators.", default="all cores"),
    beam_size: Optional[int] = option(TranslateConfig, "beam_size", "--beam-size", help="Beam size (argos uses 4)."),
    roles: Optional[str] = option(TranslateConfig, "roles", "--roles", help="Comma-separated roles to translate."),
    protect: Optional[list[str]] = option(TranslateConfig, "protect", "--protect", help="Extra regex whose matches are kept verbatim (repeatable)."),
    resume: Optional[bool] = option(TranslateConfig, "resume", "--resume/--no-resume", help="Continue an interrupted run."),
    keep_original: Optional[bool] = option(TranslateConfig, "keep_original", "--keep-original", help="Keep the source text as conversations_<from>."),
    drop_suspicious: Optional[bool] = option(TranslateConfig, "drop_suspicious", "--drop-suspicious", help="Drop records whose translation looks wrong."),
    rejects: Optional[str] = RejectsOpt,
    config: Optional[str] = ConfigOpt,
    strict: bool = StrictOpt,
) -> None:
    """Translate LLaVA records (English -> Chinese by default) with Argos Translate, a CTranslate2 model or an LLM server."""
    from .translate import translate_file

    cfg = resolve_or_exit(TranslateConfig, config, inp=inp, out=out, src=src, tgt=tgt, package=package, cache=cache,
                   backend=backend, model=model, base_url=base_url or None, api_key_env=api_key_env,
                   concurrency=concurrency, prompt=prompt, temperature=temperature, max_tokens=max_tokens,
                   retries=retries, timeout=timeout, device=device, compute_type=compute_type,
                   target_prefix=target_prefix,
                   batch_size=batch_size, workers=workers, beam_size=beam_size,
                   roles=roles.split(",") if roles else None, protect=protect or None, resume=resume,
                   keep_original=keep_original, drop_suspicious=drop_suspicious, rejects=rejects)
    run_step("translate", cfg, translate_file, strict, cfg.out)


@app.command("pack")
def pack_cmd(
    inputs: Optional[list[str]] = typer.Argument(None, metavar="IN...", help="LLaVA records (.json/.jsonl)."),
    out: Optional[str] = typer.Option(None, "-o", "--out", help="Output shard directory."),
    tokenizer: Optional[str] = option(PackConfig, "tokenizer", "--tokenizer", help="Tokenizer directory, tokenizer.json, .gguf model file, cached hub name, or 'qwen2.5' (built in). Required."),
    image_root: Optional[str] = option(PackConfig, "image_root", "--image-root", help="Directory that record image paths are relative to (required when records have images)."),
    image_tokens: Optional[int] = option(PackConfig, "image_tokens", "--image-tokens", help="Tokens per image (N); give this or --vision."),
    vision: Optional[str] = option(PackConfig, "vision", "--vision", help="Vision config (file/dir); N = (image_size/patch_size)^2 (SigLIP: minus 1)."),
    seq_len: Optional[int] = option(PackConfig, "seq_len", "--seq-len", help="Tokens per packed row."),
    template: Optional[Template] = option(PackConfig, "template", "--template", help="Chat template; auto = the tokenizer's own."),
    image_size: Optional[int] = option(PackConfig, "image_size", "--image-size", help="Downscale images so the short side is PX, re-encoded.", default="keep the original bytes"),
    rows_per_shard: Optional[int] = option(PackConfig, "rows_per_shard", "--rows-per-shard", help="Rows per shard file."),
    seed: Optional[int] = option(PackConfig, "seed", "--seed", help="Seed for the row order."),
    truncate: Optional[bool] = option(PackConfig, "truncate", "--truncate", help="Cut over-long text-only samples instead of skipping them."),
    buffer: Optional[int] = option(PackConfig, "buffer", "--buffer", help="Samples sorted together by the packer."),
    refine: Optional[int] = option(PackConfig, "refine", "--refine", help="Local-search trials per 512 rows; 0 = plain best-fit decreasing."),
    overwrite: Optional[bool] = option(PackConfig, "overwrite", "--overwrite", help="Replace an existing output directory."),
    max_image_pixels: Optional[int] = option(PackConfig, "max_image_pixels", "--max-image-pixels",
                                             help="Skip images with more pixels than this (read from the header, before decoding)."),
    rejects: Optional[str] = RejectsOpt,
    config: Optional[str] = ConfigOpt,
    strict: bool = StrictOpt,
) -> None:
    """Tokenize with a chat template, expand images and pack into 2048-token Arrow shards."""
    from .pack import pack

    cfg = resolve_or_exit(PackConfig, config, inputs=inputs or None, out=out, tokenizer=tokenizer, image_root=image_root,
                   image_tokens=image_tokens, vision=vision, seq_len=seq_len, template=template,
                   image_size=image_size, rows_per_shard=rows_per_shard, seed=seed, truncate=truncate,
                   buffer=buffer, refine=refine, overwrite=overwrite, rejects=rejects, max_image_pixels=max_image_pixels)
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
            verdict = shards.verify(shard_dir)
            if not verdict.clean:
                fail(f"{shard_dir}: {verdict}")
            out.print(f"[green]ok[/]: every shard in {shard_dir} matches its checksum ({verdict})", highlight=False)
        if show_stats or (row is None and not verify):
            view.show_stats(shard_dir, out)
        if row is not None:
            view.show_row(shard_dir, row, out)
    except (shards.ShardError, IndexError) as e:
        fail(e)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
