"""The offline demo: every lmm-toolkit step on a small bundled sample, on CPU.

Phases: build sample (photos from scikit-image / scikit-learn) -> translate (when
an en->zh argos package is installed) -> mix-text -> make-negatives -> pack
(Qwen2.5 tokenizer, 2048-token shards). Later phases (stage1, stage2, chat) are
added as those commands land. Each step is run through its real CLI and prints its
summary; outputs go under --out (default runs/demo).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.rule import Rule

HERE = Path(__file__).resolve().parent
IMAGE_TOKENS = 16  # the tiny vision tower: 64 px images, 16 px patches -> (64/16)^2
IMAGE_SIZE = 64
console = Console()


def step(title: str, *args: str | Path) -> None:
    """Run one CLI step, show the command, stop the demo if it fails."""
    cmd = [str(a) for a in args]
    console.print(Rule(f"[bold]{title}"))
    console.print(f"[dim]$ {shlex.join([cmd[0].split('.')[0], *cmd[1:]])}[/]", highlight=False)
    t0 = time.time()
    rc = subprocess.call([sys.executable, "-m", *cmd])
    if rc != 0:
        console.print(f"[bold red]step '{title}' failed with exit code {rc}[/]")
        sys.exit(rc)
    console.print(f"[dim]({time.time() - t0:.1f} s)[/]")


def translate_if_possible(src: Path, dst: Path) -> Path:
    """Translate with an installed en->zh argos package, or say clearly why not."""
    from lmmdata.config import ConfigError
    from lmmdata.translator import find_argos_package

    try:
        find_argos_package("en", "zh")
    except ConfigError as e:
        console.print(Rule("[bold]translate"))
        console.print(f"[bold yellow]translate skipped:[/] {e}. The demo goes on with the English sample.", highlight=False)
        return src
    step("translate", "lmmdata.cli", "translate", src, "-o", dst)
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("runs/demo"))
    out = ap.parse_args().out
    t0 = time.time()

    console.print(Rule("[bold]build sample"))
    sys.path.insert(0, str(HERE))
    from sample import build

    llava_en = build(out / "data")
    console.print(f"wrote {llava_en} and {len(list((out / 'data' / 'images').iterdir()))} images")

    records = translate_if_possible(llava_en, out / "data" / "llava_zh.jsonl")
    mixed = out / "data" / "mixed.jsonl"
    step("mix-text", "lmmdata.cli", "mix-text", records, HERE / "data" / "text_alpaca.json",
         HERE / "data" / "text_messages.jsonl", "-o", mixed, "--ratio", "0.3", "--seed", "0")
    final = out / "data" / "train.jsonl"
    step("make-negatives", "lmmdata.cli", "make-negatives", mixed, "-o", final, "--per-record", "1",
         "--positives", "0.3", "--hard", "--seed", "0")

    shards = out / "shards"
    step("pack", "lmmdata.cli", "pack", final, "-o", shards, "--tokenizer", "qwen2.5", "--image-root", out / "data",
         "--image-tokens", str(IMAGE_TOKENS), "--image-size", str(IMAGE_SIZE), "--overwrite")

    console.print(Rule("[bold]done"))
    console.print(f"demo finished in {time.time() - t0:.0f} s")
    console.print(f"training records: {final} (resolved config and summary beside it: {final}.config.yaml)")
    console.print(f"shards: {shards}; look inside with `lmmdata inspect {shards} --stats` and "
                  f"`lmmdata inspect {shards} --row 0`", highlight=False)


if __name__ == "__main__":
    main()
