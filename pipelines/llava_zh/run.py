"""The LLaVA-zh recipe, step by step, from one YAML file (config.yaml beside this script).

    LLaVA-Pretrain 558K -> translate -> pack -> stage1
    LLaVA-665K -> translate -> mix-text (+ text-only sets) -> make-negatives -> pack -> stage2 (from stage1)

Each step gets its own config file under WORK_DIR/configs/ (the exact options of
its command, so any step can be re-run by hand) and runs through the real CLI;
training steps are launched with torchrun on `launch.nproc_per_node` GPUs. A step
whose output is complete is skipped, so an interrupted recipe continues where it
stopped (translate also resumes inside a file).

    python pipelines/llava_zh/run.py --dry-run          # write the step configs, print the commands
    python pipelines/llava_zh/run.py                    # run everything
    python pipelines/llava_zh/run.py --only stage2      # one step
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent


@dataclass
class Step:
    name: str
    tool: str  # lmmdata | lmmtrain
    command: str
    options: dict
    output: Path  # complete when this exists (for stages: its lmm_config.json)


def plan(cfg: dict) -> list[Step]:
    """The recipe's steps with every option resolved from the YAML file."""
    work = Path(cfg["work_dir"])
    p, m = cfg["paths"], cfg["models"]
    data = work / "data"
    pre_zh, ins_zh = data / "pretrain_zh.jsonl", data / "instruct_zh.jsonl"
    mixed, final = data / "instruct_zh_mixed.jsonl", data / "instruct_zh_final.jsonl"
    shards_pre, shards_ins = work / "shards" / "pretrain", work / "shards" / "instruct"
    stage1, stage2 = work / "stage1", work / "stage2"
    pack = {**cfg["pack"], "tokenizer": m["tokenizer"]}
    return [
        Step("translate_pretrain", "lmmdata", "translate", {**cfg["translate"], "inp": p["pretrain_json"], "out": str(pre_zh)}, pre_zh),
        Step("pack_pretrain", "lmmdata", "pack", {**pack, **cfg.get("pack_pretrain", {}), "inputs": [str(pre_zh)],
                                                  "out": str(shards_pre), "image_root": p["pretrain_images"]},
             shards_pre / "manifest.json"),
        Step("stage1", "lmmtrain", "stage1", {**cfg["stage1"], "data": [str(shards_pre)], "out": str(stage1),
                                              "vision": m["vision"], "lm": m["lm"], "projector": m["projector"],
                                              "deepspeed": cfg["launch"]["deepspeed_stage1"]}, stage1 / "lmm_config.json"),
        Step("translate_instruct", "lmmdata", "translate", {**cfg["translate"], "inp": p["instruct_json"], "out": str(ins_zh)}, ins_zh),
        Step("mix_text", "lmmdata", "mix-text", {**cfg["mix_text"], "mm": str(ins_zh), "text": list(p["text_only"]),
                                                 "out": str(mixed)}, mixed),
        Step("make_negatives", "lmmdata", "make-negatives", {**cfg["make_negatives"], "inp": str(mixed), "out": str(final)}, final),
        Step("pack_instruct", "lmmdata", "pack", {**pack, "inputs": [str(final)], "out": str(shards_ins),
                                                  "image_root": p["instruct_images"]}, shards_ins / "manifest.json"),
        Step("stage2", "lmmtrain", "stage2", {**cfg["stage2"], "data": [str(shards_ins)], "out": str(stage2),
                                              "init": str(stage1), "deepspeed": cfg["launch"]["deepspeed_stage2"]},
             stage2 / "lmm_config.json"),
    ]


def command(step: Step, config_file: Path, nproc: int) -> list[str]:
    """The step's command line, run by this very interpreter (no `python`/`torchrun` looked up on PATH,
    so the recipe works from any venv without activating it)."""
    if step.tool == "lmmtrain":
        launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"] if nproc > 1 \
            else [sys.executable]
        return [*launcher, "-m", "lmmtrain.cli", step.command, "--config", str(config_file)]
    return [sys.executable, "-m", "lmmdata.cli", step.command, "--config", str(config_file)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=HERE / "config.yaml")
    ap.add_argument("--dry-run", action="store_true", help="write the step configs and print the commands only")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--only", help="run just this step")
    group.add_argument("--from", dest="start", help="run from this step on")
    ap.add_argument("--force", action="store_true", help="run steps even when their output exists")
    args = ap.parse_args()

    cfg = yaml.safe_load(args.config.read_text(encoding="utf-8"))
    steps = plan(cfg)
    names = [s.name for s in steps]
    for wanted in (args.only, args.start):
        if wanted and wanted not in names:
            ap.error(f"unknown step {wanted!r}; steps: {', '.join(names)}")
    if args.only:
        steps = [s for s in steps if s.name == args.only]
    elif args.start:
        steps = steps[names.index(args.start):]
    conf_dir = Path(cfg["work_dir"]) / "configs"
    conf_dir.mkdir(parents=True, exist_ok=True)
    for step in steps:
        config_file = conf_dir / f"{step.name}.yaml"
        config_file.write_text(yaml.safe_dump(step.options, allow_unicode=True, sort_keys=False), encoding="utf-8")
        cmd = command(step, config_file, int(cfg["launch"]["nproc_per_node"]))
        done = step.output.exists() and not args.force
        print(f"== {step.name}{' (done, skipped)' if done else ''}\n$ {shlex.join(cmd)}", flush=True)
        if args.dry_run or done:
            continue
        rc = subprocess.call(cmd)
        if rc != 0:
            print(f"step {step.name} failed with exit code {rc}; fix it and re-run (finished steps are skipped)")
            sys.exit(rc)


if __name__ == "__main__":
    main()
