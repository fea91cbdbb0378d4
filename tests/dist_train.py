"""Run by test_train under `torchrun --nproc_per_node 2`: `lmmtrain stage1` with ZeRO-3 where one rank's row has
no images, through the real command line (its distributed exit included).

Usage: dist_train.py TEXT_SHARDS IMAGE_SHARDS OUT LOG_PREFIX. Each rank appends the dataset rows it reads to
LOG_PREFIX.RANK as they are read (the command ends the process itself, so nothing runs after it).
"""

import os
import sys
from pathlib import Path

from lmmtrain.cli import main
from lmmtrain.data import ShardDataset

text, image, out, log = sys.argv[1:5]
original = ShardDataset.__getitem__


def recording(self, i):
    with open(f"{log}.{os.environ['RANK']}", "a", encoding="utf-8") as f:
        f.write(f"{i}\n")
    return original(self, i)


ShardDataset.__getitem__ = recording  # our own class, instrumented to record which rows each rank reads
zero3 = Path(__file__).resolve().parent.parent / "pipelines" / "deepspeed" / "zero3.json"
sys.argv = ["lmmtrain", "stage1", "-d", text, "-d", image, "-o", out, "--max-steps", "1", "--batch-rows", "1",
            "--workers", "0", "--logging-steps", "1", "--deepspeed", str(zero3)]
main()
