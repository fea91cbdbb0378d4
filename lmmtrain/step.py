"""The training objective on packed batches: summed cross-entropy over trained tokens.

Logits are computed only where a label is trained (`logits_to_keep` with a
boolean mask), which skips the vocabulary projection for image tokens, prompts
and padding: with a 150k-token vocabulary that is most of a small model's work.
Dividing the sum by the number of trained tokens in the whole (accumulated,
all-rank) batch gives the mean over trained tokens across the batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from lmmdata.template import IGNORE

MODEL_KEYS = ("input_ids", "position_ids", "pixel_values")


def loss_sum(model, batch: dict[str, Any]) -> tuple[torch.Tensor, int]:
    """(sum of token losses, number of trained tokens) for one packed batch."""
    labels = batch["labels"]
    targets = labels[:, 1:]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = targets != IGNORE
    inputs = {k: batch[k] for k in MODEL_KEYS if k in batch}
    out = model(**inputs, attention_mask=None, use_cache=False, logits_to_keep=keep)
    wanted = targets[targets != IGNORE]
    loss = F.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]).float(), wanted, reduction="sum")
    return loss, int(wanted.numel())


def add_blank_image(batch: dict[str, Any], span: list[int], image_size: int, channels: int, pad_id: int) -> dict[str, Any]:
    """Append one blank image as its own isolated, untrained sample to a batch that has no images.

    Batches without images would skip the vision tower and projector on some ranks
    only; under ZeRO-3 the ranks then gather different parameters in a different
    order and hang (DDP, for its part, finds the projector unused). The blank image
    runs through the native forward in the same order as a real one (embeddings,
    tower, projector, LM) but sits in its own position-id block with labels -100,
    so it never reaches the loss or any real sample.
    """
    ids, labels, pos = batch["input_ids"], batch["labels"], batch["position_ids"]
    n = len(span)
    extra = torch.tensor(span, dtype=ids.dtype, device=ids.device)
    if ids.shape[0] == 1:  # flat: one more block at the end
        new_ids = torch.cat([ids, extra[None]], 1)
        new_labels = torch.cat([labels, torch.full((1, n), IGNORE, dtype=labels.dtype, device=labels.device)], 1)
        new_pos = torch.cat([pos, torch.arange(n, device=pos.device)[None]], 1)
    else:  # rows: one more row, padding (its own block) added where widths differ
        width = max(ids.shape[1], n)

        def widen(x: torch.Tensor, fill: int | None) -> torch.Tensor:
            k = width - x.shape[1]
            if k == 0:
                return x
            tail = torch.arange(k, device=x.device).expand(x.shape[0], k) if fill is None else \
                torch.full((x.shape[0], k), fill, dtype=x.dtype, device=x.device)
            return torch.cat([x, tail.to(x.dtype)], 1)

        row = torch.full((1, width), pad_id, dtype=ids.dtype, device=ids.device)
        row[0, :n] = extra
        row_pos = torch.cat([torch.arange(n), torch.arange(width - n)]).to(pos.device)[None]
        new_ids = torch.cat([widen(ids, pad_id), row])
        new_labels = torch.cat([widen(labels, IGNORE), torch.full((1, width), IGNORE, dtype=labels.dtype, device=labels.device)])
        new_pos = torch.cat([widen(pos, None), row_pos])
    blank = torch.zeros(1, channels, image_size, image_size, device=ids.device)
    return {**batch, "input_ids": new_ids, "labels": new_labels, "position_ids": new_pos, "pixel_values": blank}
