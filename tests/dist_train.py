"""Run by test_train under `torchrun --nproc_per_node 2`: ZeRO-3 stage 1 where one rank's row has no images.

Usage: dist_train.py TEXT_SHARDS IMAGE_SHARDS OUT LOG_JSON. Each rank records the
dataset rows it trained on; rank 0 writes them to LOG_JSON.
"""

import json
import sys
from pathlib import Path

import torch.distributed as dist

from lmmtrain.config import Stage1Config
from lmmtrain.data import ShardDataset
from lmmtrain.stages import train_stage

text, image, out, log = sys.argv[1:5]
seen: list[list[int]] = []
original = ShardDataset.__getitem__


def recording(self, i):
    seen.append([i])
    return original(self, i)


ShardDataset.__getitem__ = recording  # our own class, instrumented to record which rows each rank reads
cfg = Stage1Config(data=[text, image], out=out, max_steps=1, batch_rows=1, workers=0, logging_steps=1,
                   deepspeed=str(Path(__file__).resolve().parent.parent / "pipelines" / "deepspeed" / "zero3.json"))
train_stage(cfg)
gathered = [None] * dist.get_world_size()
dist.all_gather_object(gathered, seen)
if dist.get_rank() == 0:
    Path(log).write_text(json.dumps({str(r): s for r, s in enumerate(gathered)}))
dist.barrier()
dist.destroy_process_group()
