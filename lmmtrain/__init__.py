"""lmmtrain: two-stage training of vision-encoder + projector + LM models on lmmdata shards."""

__version__ = "0.1.0"
