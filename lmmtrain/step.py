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


def touch_vision(model, like: torch.Tensor | None = None) -> torch.Tensor:
    """Run the vision tower + projector on one blank image and return an empty-sum zero.

    Batches without images would otherwise skip the tower on some ranks only; under
    ZeRO-3 the ranks then disagree on which parameters to gather and hang. Adding
    this zero (a sum over an empty slice, so no blank image reaches the loss) keeps
    every rank's collectives and the projector's gradient hooks identical.
    """
    vc = model.config.vision_config
    param = next(model.parameters())
    blank = torch.zeros(1, vc.num_channels, vc.image_size, vc.image_size, device=param.device,
                        dtype=like.dtype if like is not None else param.dtype)
    feats = model.get_image_features(pixel_values=blank)
    feats = getattr(feats, "pooler_output", feats)
    if isinstance(feats, (list, tuple)):
        feats = torch.cat([f.reshape(-1) for f in feats])
    return feats.reshape(-1)[:0].sum()
