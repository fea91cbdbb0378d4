"""The LLaVA record: validation, normalisation and streaming reading.

One record type flows through every step: a dict with `id`, optional `image`
(str or list of str), `conversations` ([{from, value}, ...]) and any extra keys,
which are kept untouched. `validate` either returns the (normalised) record or
raises `BadRecord` with a reason key and a sentence that says what is wrong.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Iterator

from .jsonio import BadItem, Where, iter_items
from .stats import Stats

IMAGE = "<image>"
ROLES = ("system", "human", "gpt")


class BadRecord(Exception):
    """A record that cannot be used; `reason` is the counter key."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def images_of(record: dict) -> list[str]:
    """The record's image paths in placeholder order ([] for text-only)."""
    img = record.get("image")
    if img is None:
        return []
    return [img] if isinstance(img, str) else list(img)


def record_id(record: Any) -> Any:
    return record.get("id") if isinstance(record, dict) else None


def validate(record: Any) -> dict:
    """Check a LLaVA record and apply LLaVA's placeholder convention.

    - `image`: absent, a non-empty string or a list of non-empty strings;
    - one image and no `<image>` placeholder: `<image>\\n` is prepended to the
      first human turn; otherwise placeholders must equal images in number;
    - roles: optional `system` first, then `human`/`gpt` alternating, ending
      with `gpt`; every value a non-empty string; no placeholder in answers.
    """
    if not isinstance(record, dict):
        raise BadRecord("not_an_object", f"a record must be a JSON object, got {type(record).__name__}")
    if "conversations" not in record:
        raise BadRecord("missing_conversations", "record has no 'conversations' list")
    conv = record["conversations"]
    if not isinstance(conv, list):
        raise BadRecord("wrong_type", f"'conversations' must be a list, got {type(conv).__name__}")
    if not conv:
        raise BadRecord("empty_conversation", "'conversations' is empty")
    img = record.get("image")
    if img is not None and not (
        (isinstance(img, str) and img) or (isinstance(img, list) and all(isinstance(p, str) and p for p in img))
    ):
        raise BadRecord("bad_image_field", "'image' must be a non-empty string or a list of non-empty strings")
    expected = "human"
    for i, turn in enumerate(conv):
        if not isinstance(turn, dict) or not isinstance(turn.get("from"), str) or "value" not in turn:
            raise BadRecord("wrong_type", f"turn {i} must be an object with 'from' and 'value'")
        role, value = turn["from"], turn["value"]
        if role not in ROLES:
            raise BadRecord("unknown_role", f"turn {i} has unknown role {role!r} (expected one of {', '.join(ROLES)})")
        if not isinstance(value, str):
            raise BadRecord("wrong_type", f"turn {i} value must be a string, got {type(value).__name__}")
        if not value.strip():
            raise BadRecord("empty_turn", f"turn {i} ({role}) is empty")
        if role == "system" and i == 0:
            continue
        if role != expected:
            raise BadRecord("bad_turn_order", f"turn {i} is {role!r} where {expected!r} was expected (roles: system?, then human/gpt alternating)")
        if role == "gpt" and IMAGE in value:
            raise BadRecord("placeholder_in_answer", f"turn {i} (gpt) contains {IMAGE}; images belong in human turns")
        expected = "gpt" if role == "human" else "human"
    if expected != "human":
        raise BadRecord("bad_turn_order", "conversation ends with a human turn; the last turn must be a gpt answer")
    n_img = len(images_of(record))
    n_ph = sum(t["value"].count(IMAGE) for t in conv)
    if n_img == 1 and n_ph == 0:
        first = next(t for t in conv if t["from"] == "human")
        first["value"] = f"{IMAGE}\n{first['value']}"
        n_ph = 1
    if n_ph != n_img:
        raise BadRecord("placeholder_mismatch", f"{n_ph} {IMAGE} placeholder(s) but {n_img} image(s)")
    return record


def iter_valid(
    paths: Iterable[str | os.PathLike],
    stats: Stats,
    check: Callable[[Any, Where], dict] | None = None,
    count_as: str = "read",
) -> Iterator[tuple[dict, Where]]:
    """Stream records from files; bad ones are counted in `stats` and skipped.

    `check(raw, where)` validates or converts one item (default: `validate`).
    """
    for path in paths:
        yield from check_items(iter_items(path), stats, check, count_as)


def check_items(
    items: Iterable[tuple[Any, Where] | BadItem],
    stats: Stats,
    check: Callable[[Any, Where], dict] | None = None,
    count_as: str = "read",
) -> Iterator[tuple[dict, Where]]:
    """Validate parsed items; every item is counted as `count_as`, bad ones skipped."""
    check = check or (lambda raw, where: validate(raw))
    for item in items:
        stats.add(count_as)
        if isinstance(item, BadItem):
            stats.skip(item.where, None, item.reason, item.message)
            continue
        raw, where = item
        try:
            yield check(raw, where), where
        except BadRecord as e:
            stats.skip(where, record_id(raw), e.reason, e.message)


def is_cjk(text: str) -> bool:
    """True when the text has any CJK ideograph (used to guess Chinese)."""
    return any("\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf" for ch in text)
