"""Text-only instruction sets (Alpaca, ShareGPT, OpenAI messages) as LLaVA records.

Mixed into multimodal data so the LM keeps its plain-text chat ability. The
format is detected per record; the result is a LLaVA record without `image`,
validated like any other. Keys the format does not consume are kept.
"""

from __future__ import annotations

from typing import Any

from .records import IMAGE, BadRecord, validate

ROLE_ALIASES = {
    "human": "human", "user": "human",
    "gpt": "gpt", "assistant": "gpt", "chatgpt": "gpt", "bard": "gpt", "bing": "gpt", "model": "gpt",
    "system": "system",
}


def detect_format(raw: dict) -> str:
    """'alpaca', 'sharegpt' or 'messages' from the keys of one record."""
    if "instruction" in raw and "output" in raw:
        return "alpaca"
    if "conversations" in raw:
        return "sharegpt"
    if "messages" in raw:
        return "messages"
    raise BadRecord("unknown_format", "not Alpaca (instruction/output), ShareGPT (conversations) or OpenAI (messages)")


def _text(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # OpenAI content parts
        parts = []
        for p in value:
            if not isinstance(p, dict) or p.get("type") != "text":
                raise BadRecord("not_text_only", f"{where} has a non-text content part; text sets must be text-only")
            parts.append(p.get("text", ""))
        return "".join(parts)
    raise BadRecord("wrong_type", f"{where} must be a string, got {type(value).__name__}")


def to_llava(raw: Any, default_id: str) -> dict:
    """Convert one text-only record of any supported format into a LLaVA record."""
    if not isinstance(raw, dict):
        raise BadRecord("not_an_object", f"a record must be a JSON object, got {type(raw).__name__}")
    fmt = detect_format(raw)
    rest = {k: v for k, v in raw.items() if k not in ("instruction", "input", "output", "conversations", "messages", "image", "images")}
    if raw.get("image") or raw.get("images"):
        raise BadRecord("not_text_only", "record has images; text sets must be text-only")
    if fmt == "alpaca":
        inst, inp = _text(raw["instruction"], "instruction"), _text(raw.get("input") or "", "input")
        human = f"{inst}\n\n{inp}" if inp.strip() else inst
        conv = [{"from": "human", "value": human}, {"from": "gpt", "value": _text(raw["output"], "output")}]
    else:
        turns = raw["conversations"] if fmt == "sharegpt" else raw["messages"]
        if not isinstance(turns, list):
            raise BadRecord("wrong_type", f"'{'conversations' if fmt == 'sharegpt' else 'messages'}' must be a list")
        conv = []
        for i, t in enumerate(turns):
            if not isinstance(t, dict):
                raise BadRecord("wrong_type", f"turn {i} must be an object")
            role = t.get("from", t.get("role")) if fmt == "sharegpt" else t.get("role")
            value = t.get("value", t.get("content")) if fmt == "sharegpt" else t.get("content")
            if role not in ROLE_ALIASES:
                raise BadRecord("unknown_role", f"turn {i} has unknown role {role!r}")
            conv.append({"from": ROLE_ALIASES[role], "value": _text(value, f"turn {i}")})
    if any(IMAGE in t["value"] for t in conv):
        raise BadRecord("not_text_only", f"text record contains {IMAGE}; text sets must be text-only")
    out = {"id": rest.pop("id", default_id), "conversations": conv, **rest}
    return validate(out)
