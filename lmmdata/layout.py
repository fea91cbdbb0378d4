"""Names inside a shard directory (no pyarrow import: command lines check them before loading anything)."""

FORMAT = "lmm-shards"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TOKENIZER_DIR = "tokenizer"
