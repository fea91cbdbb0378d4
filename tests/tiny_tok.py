"""A tiny Llama-style tokenizer (SentencePiece-like BPE: Metaspace, byte fallback) trained in a second."""

from __future__ import annotations

from pathlib import Path

LLAMA_SPECIAL = ["<unk>", "<s>", "</s>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
CORPUS = [
    "A chat between a curious user and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "USER: What is in the picture? ASSISTANT: A cat sitting on a red sofa next to a window.",
    "Describe the image briefly. Compare the two photos. Which one is brighter?",
    "system user assistant hello world the a an of in on with and is are this that",
    "你好 这是一张照片 图片里有一只猫",
] * 20


def build_llama_tokenizer(out_dir: Path, vocab_size: int = 900) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    byte_pieces = [f"<0x{i:02X}>" for i in range(256)]  # byte fallback: any text encodes, no <unk>
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=LLAMA_SPECIAL + byte_pieces,
                                  show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    hf.save_pretrained(out_dir)
    return Path(out_dir)
