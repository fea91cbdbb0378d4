"""The model: a transformers-native LLaVA-style class built from a vision tower and an LM.

`vipllava` (default) is `VipLlavaForConditionalGeneration` with one feature layer
(-2): CLIP penultimate layer, CLS dropped, then LayerNorm -> Linear -> GELU ->
Linear. `mlp2x_gelu` is `LlavaForConditionalGeneration` (LLaVA-1.5's projector).
Either way the checkpoint loads with `from_pretrained` and no custom code, and
the LM inside is the unmodified causal LM.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from lmmdata.config import ConfigError
from lmmdata.hub import local_path
from lmmdata.tokenizer import IM_END, IM_START, IMAGE_TOKEN, gguf_hint, is_gguf, pretrained_source

from .config import ATTN_CHOICES, PROJECTORS  # noqa: F401  (re-exported: the model's choices)
from .presets import PRESETS

FEATURE_LAYER = -2


class ModelError(ValueError):
    """The model cannot be built or does not fit the shards."""


def default_attn(requested: str = "auto") -> str:
    """flash_attention_2 when it can run (CUDA + flash-attn installed), else sdpa."""
    if requested != "auto":
        return requested
    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def _config_from_dict(d: dict[str, Any]):
    from transformers import AutoConfig

    d = dict(d)
    return AutoConfig.for_model(d.pop("model_type"), **d)


def vision_config_of(vision: str):
    """The vision part of a CLIP/SigLIP checkpoint's config (full model or vision-only)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(local_path(vision, "--vision"))
    except ConfigError:
        raise
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load vision config {vision!r}: {e}") from e
    config = getattr(config, "vision_config", config)
    if not hasattr(config, "patch_size") or not hasattr(config, "image_size"):
        raise ModelError(f"{vision!r} is not a CLIP/SigLIP-style vision model (no patch_size/image_size)")
    return config


def image_tokens_for(vision_config, projector: str = "vipllava") -> int:
    """Image tokens per image the model produces: patches, minus the first token VipLlava drops for SigLIP."""
    patches = (vision_config.image_size // vision_config.patch_size) ** 2
    has_cls = vision_config.model_type.startswith("clip")
    if has_cls or projector == "mlp2x_gelu":  # CLIP: CLS dropped; Llava keeps every SigLIP patch ("full")
        return patches
    return patches - 1  # VipLlava always drops token 0, a real patch for SigLIP


def build_model(cfg, tokenizer, image_ids: dict[str, int], dtype: torch.dtype = torch.float32):
    """A fresh model for stage 1 (preset, or pretrained vision + LM) sized for `tokenizer`."""
    from transformers import AutoModel, LlavaConfig, VipLlavaConfig

    if cfg.projector not in PROJECTORS:
        raise ModelError(f"unknown projector {cfg.projector!r}; choose one of {', '.join(PROJECTORS)}")
    pretrained = bool(cfg.vision or cfg.lm)
    if pretrained and not (cfg.vision and cfg.lm):
        raise ModelError("give both `vision` and `lm` (or neither, to use a preset)")
    if pretrained:
        vision_src, lm_src = local_path(cfg.vision, "--vision"), local_path(cfg.lm, "--lm")
        vision_config = vision_config_of(vision_src)
        _check_lm_tokenizer(lm_src, tokenizer)
        lm = _load_lm(lm_src, dtype)
        text_config = lm.config
    else:
        if cfg.preset not in PRESETS:
            raise ModelError(f"unknown preset {cfg.preset!r}; built-in presets: {', '.join(PRESETS)}")
        vision_config = _config_from_dict(PRESETS[cfg.preset]["vision"])
        text_config = _config_from_dict({**PRESETS[cfg.preset]["text"], "vocab_size": len(tokenizer)})
    common = dict(vision_config=vision_config, text_config=text_config, image_token_id=image_ids["image"],
                  vision_feature_layer=FEATURE_LAYER, projector_hidden_act="gelu")
    if cfg.projector == "vipllava":
        config = VipLlavaConfig(**common)
        from transformers import VipLlavaForConditionalGeneration as cls
    else:
        strategy = "default" if vision_config.model_type.startswith("clip") else "full"
        config = LlavaConfig(**common, vision_feature_select_strategy=strategy,
                             image_seq_length=image_tokens_for(vision_config, "mlp2x_gelu"))
        from transformers import LlavaForConditionalGeneration as cls
    config.pad_token_id = tokenizer.pad_token_id
    model = cls._from_config(config, attn_implementation=default_attn(cfg.attn), dtype=dtype)
    if pretrained:
        vision = AutoModel.from_pretrained(vision_src, dtype=dtype)
        _copy_vision(model.model.vision_tower, vision)
        model.model.language_model.load_state_dict(lm.model.state_dict())
        model.lm_head.load_state_dict(lm.get_output_embeddings().state_dict())
        base_vocab = lm.config.vocab_size
        del lm, vision
        if len(tokenizer) > model.config.text_config.vocab_size:
            model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        init_new_rows(model, [image_ids["im_start"], image_ids["image"], image_ids["im_end"]],
                      min(base_vocab, min(image_ids.values())))
    return model


def _check_lm_tokenizer(lm: str, shard_tokenizer) -> None:
    """The LM's own tokenizer (when it ships one) must give the shards' ids."""
    from lmmdata.tokenizer import TokenizerError, add_image_tokens, load_tokenizer, vocab_hash

    try:
        own = load_tokenizer(lm)
    except TokenizerError:
        return  # no tokenizer next to the weights: nothing to compare against
    add_image_tokens(own)
    if vocab_hash(own) != vocab_hash(shard_tokenizer):
        raise ModelError(f"the shards were packed with tokenizer {shard_tokenizer.name_or_path!r}, whose vocabulary "
                         f"differs from LM {lm!r}'s own; re-pack with `lmmdata pack --tokenizer {lm}`")


def _load_lm(path: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    try:  # a GGUF file is dequantized to `dtype` by transformers
        return AutoModelForCausalLM.from_pretrained(**pretrained_source(path), dtype=dtype)
    except (ImportError, OSError, ValueError) as e:
        raise ModelError(f"cannot load LM {path!r}: {e}{gguf_hint() if is_gguf(path) else ''}") from e


def _copy_vision(tower, loaded) -> None:
    """Copy a loaded CLIP/SigLIP model's vision weights into the composite model's tower."""
    state = loaded.state_dict()
    if not any(k.startswith("vision_model.") for k in tower.state_dict()):
        state = {k.removeprefix("vision_model."): v for k, v in state.items()}
    keys = set(tower.state_dict())
    state = {k: v for k, v in state.items() if k in keys}
    missing = keys - set(state)
    if missing:
        raise ModelError(f"vision checkpoint lacks {len(missing)} tower weight(s), e.g. {sorted(missing)[:3]}")
    tower.load_state_dict(state)


@torch.no_grad()
def init_new_rows(model, ids: list[int], base_vocab: int) -> None:
    """Initialise the image tokens' embedding rows near the mean of the LM's own embeddings.

    Untrained rows (random or zero padding rows) would put `<im_start>`/`<im_end>`
    far outside the LM's input distribution while the LM is frozen in stage 1.
    """
    emb = model.get_input_embeddings().weight
    old = emb[:base_vocab].float()
    mean, std = old.mean(0), old.std(0)
    gen = torch.Generator().manual_seed(0)
    for i in ids:
        noise = torch.randn(emb.shape[1], generator=gen) * std * 0.1
        emb[i] = (mean + noise).to(emb.dtype)


def load_checkpoint(path: str, attn: str = "auto", dtype: torch.dtype = torch.float32):
    """A checkpoint written by `lmmtrain` (or any LLaVA/VipLlava checkpoint), in its native class."""
    from transformers import AutoConfig, LlavaForConditionalGeneration, VipLlavaForConditionalGeneration

    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load checkpoint {path!r}: {e}") from e
    classes = {"vipllava": VipLlavaForConditionalGeneration, "llava": LlavaForConditionalGeneration}
    if config.model_type not in classes:
        raise ModelError(f"{path}: model type {config.model_type!r} is not a LLaVA-style model (vipllava or llava)")
    return classes[config.model_type].from_pretrained(path, attn_implementation=default_attn(attn), dtype=dtype)


def image_tokens_of(model) -> int:
    projector = "mlp2x_gelu" if model.config.model_type == "llava" else "vipllava"
    return image_tokens_for(model.config.vision_config, projector)


def special_ids_of(tokenizer) -> dict[str, int]:
    ids = {k: tokenizer.convert_tokens_to_ids(t) for k, t in (("im_start", IM_START), ("image", IMAGE_TOKEN), ("im_end", IM_END))}
    if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids.values():
        raise ModelError(f"tokenizer lacks the image tokens {IM_START} {IMAGE_TOKEN} {IM_END}")
    return ids


def check_fits(model, tokenizer, manifest: dict, where: str) -> None:
    """Refuse shards whose image tokens, special ids or vocabulary the model does not share."""
    n = image_tokens_of(model)
    if manifest["image_tokens"] != n:
        raise ModelError(f"{where}: shards have {manifest['image_tokens']} image tokens per image but the model's "
                         f"vision tower gives {n} ({model.config.vision_config.image_size} px / patch "
                         f"{model.config.vision_config.patch_size}); re-pack with `--image-tokens {n}`")
    special = manifest["special_tokens"]
    if special["image"] != model.config.image_token_id:
        raise ModelError(f"{where}: shards use <image> id {special['image']} but the model expects "
                         f"{model.config.image_token_id}; re-pack with the model's tokenizer")
    vocab = model.get_input_embeddings().weight.shape[0]
    top = max(special["im_start"], special["image"], special["im_end"], manifest["tokenizer"]["vocab_size"] - 1)
    if top >= vocab:
        raise ModelError(f"{where}: shards use token ids up to {top} but the model's embedding has {vocab} rows")


def freeze_for_stage(model, stage: str) -> dict[str, int]:
    """Stage 1: only the projector trains. Stage 2: projector + LM; the vision tower never does."""
    for p in model.parameters():
        p.requires_grad_(False)
    trained = [model.model.multi_modal_projector]
    if stage == "stage2":
        trained += [model.model.language_model, model.lm_head]
    for module in trained:
        for p in module.parameters():
            p.requires_grad_(True)
    return parameter_counts(model)


def train_token_rows(model, ids: list[int]) -> None:
    """Let only the input-embedding rows of `ids` train (stage 1 with `<im_start>`/`<im_end>`).

    The embedding matrix gets gradients, masked to those rows by a hook; with Adam and
    no weight decay the other rows then get exactly zero updates (LLaVA trains the
    embeddings when it adds image start/end tokens; this trains only the new ones).
    """
    weight = model.get_input_embeddings().weight
    mask = torch.zeros(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)
    mask[ids] = 1
    weight.requires_grad_(True)
    weight.register_hook(lambda grad: grad * mask.to(grad.dtype))


def parameter_counts(model) -> dict[str, int]:
    count = lambda m, trainable=False: sum(p.numel() for p in m.parameters() if p.requires_grad or not trainable)  # noqa: E731
    return {"vision": count(model.model.vision_tower), "projector": count(model.model.multi_modal_projector),
            "lm": count(model.model.language_model) + count(model.lm_head), "trainable": count(model, True)}
