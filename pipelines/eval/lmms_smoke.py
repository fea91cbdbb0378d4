"""Smoke-test lmms-eval on a checkpoint, offline: a 4-question local task (the demo's photos, Chinese questions).

    python pipelines/eval/lmms_smoke.py runs/demo/stage2 --lmms-python .venv-lmms/bin/python            # llava_hf
    python pipelines/eval/lmms_smoke.py runs/demo/stage2 --lmms-python ... --openai http://127.0.0.1:8000/v1  # vLLM

lmms-eval runs in its own venv (`pip install torch==2.13.0 lmms-eval` there; it pins torch/torchvision). The
dataset is written with that venv's `datasets` (save_to_disk), so nothing is downloaded; real tasks
(mmbench_cn_dev, cmmmu_val, ...) need their datasets in a local HF cache instead (README).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

WRITE = """
import sys, datasets
from PIL import Image
images, out = sys.argv[1], sys.argv[2]
rows = [(n, q, a) for n, q, a in [("astronaut", "请简要描述这张图片。", ""), ("chelsea", "图片里有什么动物？", "猫"),
        ("coffee", "这是什么？", "咖啡"), ("rocket", "Describe the image briefly.", "")]]
ds = datasets.Dataset.from_dict({"image": [Image.open(f"{images}/{n}.jpg") for n, _, _ in rows],
                                 "question": [q for _, q, _ in rows], "answer": [a for _, _, a in rows]},
                                features=datasets.Features({"image": datasets.Image(), "question": datasets.Value("string"),
                                                            "answer": datasets.Value("string")}))
datasets.DatasetDict({"test": ds}).save_to_disk(out)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--lmms-python", required=True, help="the Python of the venv with lmms-eval")
    ap.add_argument("--images", type=Path, default=None, help="the demo's photos [CHECKPOINT/../data/images]")
    ap.add_argument("--openai", default=None, help="evaluate through this OpenAI-compatible server instead")
    ap.add_argument("--hf-model", default="llava_hf",
                    help="lmms-eval model that loads the checkpoint itself: llava_hf (Llava checkpoints: processor "
                         "chat template + LlavaForConditionalGeneration) or huggingface (generic; see README)")
    ap.add_argument("--out", type=Path, default=None, help="lmms-eval output [CHECKPOINT/lmms-eval]")
    args = ap.parse_args()
    ckpt = args.checkpoint.resolve()
    images = (args.images or ckpt.parent / "data" / "images").resolve()
    out = (args.out or ckpt / "lmms-eval").resolve()
    with tempfile.TemporaryDirectory(prefix="lmm-smoke-") as tmp:
        work = Path(tmp)
        subprocess.run([args.lmms_python, "-c", WRITE, str(images), str(work / "dataset")], check=True)
        tasks = work / "tasks"
        shutil.copytree(HERE / "lmms_smoke", tasks)
        yaml = tasks / "lmm_smoke.yaml"
        yaml.write_text(yaml.read_text().replace("LMM_SMOKE_DATASET", str(work / "dataset")))
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        if args.openai:
            model = ["--model", "openai", "--model_args", "model_version=lmm"]
            env.update(OPENAI_API_KEY="none", OPENAI_API_BASE=args.openai)
        else:
            model = ["--model", args.hf_model, "--model_args", f"pretrained={ckpt},device=cpu,device_map=cpu"]
        cmd = [args.lmms_python, "-m", "lmms_eval", *model, "--tasks", "lmm_smoke", "--include_path", str(tasks),
               "--batch_size", "1", "--output_path", str(out), "--log_samples"]
        print("$", " ".join(cmd), flush=True)
        rc = subprocess.run(cmd, env=env).returncode
    results = sorted(out.rglob("*_results.json"))
    if rc or not results:
        sys.exit(rc or 1)
    scores = json.loads(results[-1].read_text())["results"]["lmm_smoke"]
    print(json.dumps({"checkpoint": str(ckpt), "via": args.openai or args.hf_model, "scores": scores}))


if __name__ == "__main__":
    main()
