"""The offline demo: every lmm-toolkit step on a small bundled sample, on CPU.

Phases: build sample (photos from scikit-image / scikit-learn) -> translate (when
an en->zh argos package is installed) -> mix-text -> make-negatives -> pack
(Qwen2.5 tokenizer, 2048-token shards) -> stage1 -> stage2 (tiny preset, YAML
configs beside this file) -> chat answers with one image, another image, two
images, several turns and no image. Each step runs through its real CLI and prints
its summary; outputs go under --out (default runs/demo).
"""

from __future__ import annotations

import argparse
import shlex
import shutil
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
    from lmmdata.backends.argos import find_argos_package

    try:
        find_argos_package("en", "zh")
    except ConfigError as e:
        console.print(Rule("[bold]translate"))
        console.print(f"[bold yellow]translate skipped:[/] {e}. The demo goes on with the English sample.", highlight=False)
        return src
    step("translate", "lmmdata.cli", "translate", src, "-o", dst)
    return dst


def fresh(out: Path) -> list[str]:
    """Re-running the demo replaces its old checkpoints."""
    if out.exists():
        shutil.rmtree(out)
    return []


def chat_answers(checkpoint: Path, images: Path) -> None:
    """A few answers from the stage-2 model: different images must give different answers."""
    from rich.table import Table

    from lmmtrain.chat import generate, load_chat_model

    console.print(Rule("[bold]chat"))
    console.print(f"[dim]$ lmmtrain chat {checkpoint} ... (Python API: lmmtrain.chat.generate)[/]", highlight=False)
    chat = load_chat_model(checkpoint, device="cpu")
    ask = [{"role": "user", "content": "Describe the image briefly."}]
    table = Table(title="answers from the demo's stage-2 model", title_justify="left")
    table.add_column("images")
    table.add_column("question")
    table.add_column("answer")
    singles = {}
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        singles[name] = generate(chat, ask, [images / f"{name}.jpg"], max_new_tokens=24)
        table.add_row(name, ask[0]["content"], singles[name])
    two = [{"role": "user", "content": "Image 1: <image>\nImage 2: <image>\nWhat is the difference between the two images?"}]
    table.add_row("astronaut + coffee", two[0]["content"].replace("\n", " "),
                  generate(chat, two, [images / "astronaut.jpg", images / "coffee.jpg"], max_new_tokens=24))
    turns = [{"role": "user", "content": "<image>\nWhat animal is this?"}]
    turns.append({"role": "assistant", "content": generate(chat, turns, [images / "chelsea.jpg"], max_new_tokens=16)})
    turns.append({"role": "user", "content": "Is the cat looking at the camera?"})
    table.add_row("chelsea (2 turns)", "What animal is this? / Is the cat looking at the camera?",
                  f"{turns[1]['content']} / {generate(chat, turns, [images / 'chelsea.jpg'], max_new_tokens=16)}")
    table.add_row("(none)", "Give me a short greeting.",
                  generate(chat, [{"role": "user", "content": "Give me a short greeting."}], max_new_tokens=24))
    console.print(table)
    distinct = len(set(singles.values()))
    console.print(f"different images -> {distinct} different answers out of {len(singles)} "
                  f"({'the images reach the model' if distinct > 1 else 'WARNING: answers do not depend on the image'})")
    console.print("[dim](a tiny random-weight model trained for two minutes: answers echo the training captions, "
                  "they are not meant to be good)[/]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("runs/demo"))
    ap.add_argument("--projector", default="vipllava", choices=("vipllava", "mlp2x_gelu"),
                    help="vipllava (DESIGN.md's LayerNorm MLP) or mlp2x_gelu (LLaVA-1.5's, served by vLLM's own Llava)")
    args = ap.parse_args()
    out = args.out
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

    stage1, stage2 = out / "stage1", out / "stage2"
    step("stage1", "lmmtrain.cli", "stage1", "-c", HERE / "stage1.yaml", "-d", shards, "-o", stage1,
         "--projector", args.projector, *fresh(stage1))
    step("stage2", "lmmtrain.cli", "stage2", "-c", HERE / "stage2.yaml", "-d", shards, "-o", stage2,
         "--init", stage1, *fresh(stage2))
    chat_answers(stage2, out / "data" / "images")

    console.print(Rule("[bold]done"))
    console.print(f"demo finished in {time.time() - t0:.0f} s")
    console.print(f"training records: {final} (resolved config and summary beside it: {final}.config.yaml)")
    console.print(f"shards: {shards}; look inside with `lmmdata inspect {shards} --stats` and "
                  f"`lmmdata inspect {shards} --row 0`, or open pipelines/inspect_shards.ipynb", highlight=False)
    console.print(f"checkpoints: {stage1} (projector trained), {stage2} (projector + LM); "
                  f"chat with `lmmtrain chat {stage2}` (attach images with --image or /image PATH)", highlight=False)


if __name__ == "__main__":
    main()
