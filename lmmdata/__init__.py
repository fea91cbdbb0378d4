"""lmmdata: LLaVA-format data pipeline (records, translate, mix, negatives, pack, shards)."""

__version__ = "0.1.0"
