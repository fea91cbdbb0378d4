"""Built-in model presets: vision tower + LM shapes with random weights, so nothing is downloaded.

Light on purpose (no torch import): the command line lists the names in `--help`.
"""

from __future__ import annotations

from typing import Any

# Built-in presets: random weights from configs, no download. `tiny` matches the
# demo's shards: 64 px / patch 16 -> 16 image tokens, Qwen2 body with the real
# Qwen2.5 vocabulary (vocab size follows the shard tokenizer).
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {  # head_dim 32 in both towers: vLLM's CPU attention refuses 16
        "vision": dict(model_type="clip_vision_model", image_size=64, patch_size=16, hidden_size=64,
                       intermediate_size=128, num_hidden_layers=3, num_attention_heads=2, projection_dim=64),
        "text": dict(model_type="qwen2", hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                     num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                     rope_theta=10000.0, tie_word_embeddings=False),
    },
    "small": {  # still CPU-friendly, for quick experiments that should learn something
        "vision": dict(model_type="clip_vision_model", image_size=224, patch_size=32, hidden_size=256,
                       intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4, projection_dim=256),
        "text": dict(model_type="qwen2", hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                     rope_theta=10000.0, tie_word_embeddings=False),
    },
    # real shapes, random weights: CLIP ViT-L/14 at 336 px (576 image tokens) + a Qwen2.5-0.5B body.
    # For GPU throughput / MFU measurements (benchmarks/gpu_stages.py) without downloading anything.
    "bench": {
        "vision": dict(model_type="clip_vision_model", image_size=336, patch_size=14, hidden_size=1024,
                       intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, projection_dim=768),
        "text": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                     num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                     rope_theta=1000000.0, tie_word_embeddings=False),
    },
}
