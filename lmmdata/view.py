"""`lmmdata inspect`: shards in the terminal (one decoded row, or statistics)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .shards import read_manifest, read_row, scan

STYLE = {"trained": "bold green", "image": "bold magenta", "text": ""}
BAR = 40


def show_row(shard_dir: str | Path, i: int, console: Console) -> None:
    """Print row `i`: each sample in a panel, trained spans green, images magenta."""
    m = read_manifest(shard_dir)
    samples = read_row(shard_dir, i)
    used = sum(len(s.input_ids) for s in samples)
    console.print(f"[bold]row {i}[/] of {m['rows']:,}: {len(samples)} sample(s), {used:,}/{m['seq_len']:,} "
                  f"tokens ({used / m['seq_len']:.1%}); [green]green[/] = trained, [magenta]magenta[/] = image tokens")
    for k, s in enumerate(samples):
        body = Text()
        for text, kind in s.spans:
            body.append(text, style=STYLE[kind])
        trained = sum(1 for x in s.labels if x != -100)
        info = ", ".join(f"{im.format} {im.size[0]}x{im.size[1]}" for im in s.images)
        parts = [body] + ([Text(f"images: {info}", style="dim")] if info else [])
        console.print(Panel(Group(*parts), title=f"sample {k + 1}/{len(samples)}: {s.id}",
                            subtitle=f"{len(s.input_ids)} tokens, {trained} trained, {len(s.images)} image(s)",
                            title_align="left", subtitle_align="right"))


def _hist_table(title: str, rows: list[tuple[str, int]]) -> Table:
    t = Table(title=title, title_justify="left", show_edge=False)
    t.add_column("bucket", justify="right")
    t.add_column("count", justify="right")
    t.add_column("")
    top = max((c for _, c in rows), default=0) or 1
    for label, c in rows:
        t.add_row(label, f"{c:,}", "█" * max(1 if c else 0, round(BAR * c / top)))
    return t


def shard_stats(shard_dir: str | Path) -> dict:
    """Figures recomputed from the shards themselves (not trusted from the manifest)."""
    import polars as pl

    m = read_manifest(shard_dir)
    lf = scan(shard_dir)
    per_row = lf.select(
        pl.col("input_ids").list.len().alias("tokens"),
        pl.col("seq_lens").list.len().alias("samples"),
        pl.col("images").list.len().alias("images"),
        (pl.col("labels").list.eval(pl.element() != -100).list.sum()).alias("trained"),
    ).collect()
    lengths = lf.select(pl.col("seq_lens").explode()).collect()["seq_lens"]
    rows = per_row.height
    tokens = int(per_row["tokens"].sum() or 0)
    return {
        "rows": rows,
        "samples": int(per_row["samples"].sum() or 0),
        "images": int(per_row["images"].sum() or 0),
        "tokens": tokens,
        "trained_tokens": int(per_row["trained"].sum() or 0),
        "real_token_fraction": tokens / (rows * m["seq_len"]) if rows else 1.0,
        "row_fill": per_row["tokens"].to_list(),
        "sample_lengths": lengths.to_list(),
    }


def show_stats(shard_dir: str | Path, console: Console) -> dict:
    """Print rows, samples, real-token fraction, histograms and skip reasons; return the figures."""
    m = read_manifest(shard_dir)
    st = shard_stats(shard_dir)
    seq = m["seq_len"]
    t = Table(title=f"{shard_dir}", title_justify="left")
    t.add_column("what")
    t.add_column("value", justify="right")
    for k in ("rows", "samples", "images", "tokens", "trained_tokens"):
        t.add_row(k, f"{st[k]:,}")
    t.add_row("real-token fraction", f"{st['real_token_fraction']:.2%}")
    p = m.get("packing", {})
    if "naive_padding_fraction" in p:
        t.add_row("  naive padding would give", f"{p['naive_padding_fraction']:.2%}")
        t.add_row("  sequential concatenation would give", f"{p['greedy_concat_fraction']:.2%}")
    t.add_row("seq_len / image tokens", f"{seq} / {m['image_tokens']}")
    t.add_row("tokenizer / template", f"{m['tokenizer']['name']} / {m['template']['name']}")
    for reason, n in sorted(m.get("skipped", {}).items()):
        t.add_row(f"skipped: {reason}", f"{n:,}", style="yellow")
    console.print(t)
    width = max(64, seq // 16)
    lens: dict[int, int] = {}
    for x in st["sample_lengths"]:
        lens[x // width * width] = lens.get(x // width * width, 0) + 1
    console.print(_hist_table("sample length (tokens)", [(f"{k}-{k + width - 1}", v) for k, v in sorted(lens.items())]))
    fills: dict[int, int] = {}
    for x in st["row_fill"]:
        b = min(9, int(10 * x / seq))
        fills[b] = fills.get(b, 0) + 1
    console.print(_hist_table("row fill", [(f"{10 * b}-{10 * b + 10}%", fills.get(b, 0)) for b in range(10)]))
    imgs = m.get("packing", {}).get("images_per_sample", {})
    console.print(_hist_table("images per sample", [(k, v) for k, v in imgs.items()]))
    return st
