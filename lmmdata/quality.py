"""The quality gate for translated strings: what machine translators and LLMs get wrong, as named flags.

One function serves both places that need it: the LLM backend retries an answer
that has a `RETRY` flag, and `translate` flags (or drops) records whose final
strings still have one. Checks are stateless over (source, answer), so a
resumed or cached run flags exactly what an uninterrupted one does, and each
costs time linear in the string (the repetition check looks at a bounded window).
"""

from __future__ import annotations

import re

from .protect import LETTER, SENTINEL

CJK_TARGETS = ("zh", "zt", "ja", "ko")
RETRY = frozenset({"empty", "latin", "length_ratio", "repetition", "chatter", "sentinels", "sentinel_order"})

CHATTER = re.compile(
    r"^\s*(?:(?:sure|certainly|of course|okay|ok)\b[,.!:]?\s*)?"
    r"(?:here(?:'s| is| are)\b.{0,40}?\btranslat|(?:the )?translation(?: is)?\s*[:：]|translated text\s*[:：]"
    r"|以下是.{0,12}(?:翻译|译文)|(?:翻译|译文)(?:如下|结果)?\s*[:：]|好的[，,。!！])",
    re.IGNORECASE)
NOTE = re.compile(r"\n\s*(?:\(?note|\(?注|（注|说明)\s*[:：]", re.IGNORECASE)
REPEAT = re.compile(r"(.{1,30}?)\1{3,}", re.DOTALL)
WINDOW = 4000  # repetition is looked for in the answer's first and last WINDOW characters


def sentinel_ids(text: str) -> list[int]:
    """The numbers of the sentinels in `text`, in order."""
    return [int(n) for n in SENTINEL.findall(text)]


def _repeats(text: str) -> set[str]:
    """Units (with a letter) that repeat 4+ times back to back, in the first/last WINDOW chars."""
    parts = [text] if len(text) <= 2 * WINDOW else [text[:WINDOW], text[-WINDOW:]]
    return {m.group(1) for p in parts for m in REPEAT.finditer(p)
            if len(m.group(0)) >= 8 and LETTER.search(m.group(1))}


def flags(src: str, out: str, tgt: str) -> set[str]:
    """Quality flags of one translation of `src` into language `tgt` (empty set = looks fine)."""
    if not out.strip():
        return {"empty"}
    found: set[str] = set()
    want, got = sentinel_ids(src), sentinel_ids(out)
    if sorted(got) != sorted(want):
        found.add("sentinels")
    elif got != want:
        found.add("sentinel_order")
    bare_src, bare_out = SENTINEL.sub("", src), SENTINEL.sub("", out)
    if tgt in CJK_TARGETS:
        letters = LETTER.findall(bare_out)
        if letters and sum(c.isascii() for c in letters) / len(letters) > 0.5:
            found.add("latin")
    if len(bare_src) >= 10:
        lo, hi = (0.1, 1.5) if tgt in CJK_TARGETS else (0.4, 2.5)
        if not lo <= len(bare_out) / len(bare_src) <= hi:
            found.add("length_ratio")
    if (CHATTER.search(bare_out) and not CHATTER.search(bare_src)) or (NOTE.search(bare_out) and not NOTE.search(bare_src)):
        found.add("chatter")
    if _repeats(bare_out) and not _repeats(bare_src):
        found.add("repetition")
    return found
