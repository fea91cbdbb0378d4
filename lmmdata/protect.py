"""Protected spans: what must never reach the translator and must come back byte-identical.

`segment` cuts a text into pieces, each either kept verbatim (`<image>` and any
`<...>` token, fenced and inline code, URLs, list markers, line breaks, white
space at piece edges, pieces with no letters, user regexes) or translated.
`join` puts translated pieces back in place, so structure survives by
construction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BUILTIN = [
    r"```.*?```",  # fenced code
    r"`[^`\n]+`",  # inline code
    r"(?:https?|ftp)://[^\s<>\"'`]*[^\s<>\"'`.,;:!?)\]]",  # URLs, without trailing punctuation
    r"<[^<>\s][^<>\n]{0,40}>",  # <image>, <im_start>, </s>, ...
    r"\n",  # line breaks: lines are translated one by one
    r"(?m:^[ \t]*(?:[-*•]|\d{1,3}[.)])[ \t]+)",  # list markers at line start
]


@dataclass(frozen=True)
class Piece:
    text: str
    translate: bool


def compile_patterns(extra: list[str] | tuple[str, ...] = ()) -> re.Pattern:
    """One alternation of the built-in protections plus `--protect` regexes."""
    for p in extra:
        try:
            re.compile(p)
        except re.error as e:
            raise ValueError(f"--protect {p!r} is not a valid regular expression: {e}") from None
    return re.compile("|".join(f"(?:{p})" for p in [*extra, *BUILTIN]), re.DOTALL)


LETTER = re.compile(r"[^\W\d_]")  # any letter, in any script


def segment(text: str, pattern: re.Pattern) -> list[Piece]:
    """Cut `text` into kept and translatable pieces; "".join(texts) == text."""
    pieces: list[Piece] = []

    def add_free(free: str) -> None:
        if not free:
            return
        core = free.strip()
        if not core or not LETTER.search(core):
            pieces.append(Piece(free, False))
            return
        lead, trail = free[: len(free) - len(free.lstrip())], free[len(free.rstrip()):]
        if lead:
            pieces.append(Piece(lead, False))
        pieces.append(Piece(core, True))
        if trail:
            pieces.append(Piece(trail, False))

    pos = 0
    for m in pattern.finditer(text):
        if m.start() == m.end():
            continue
        add_free(text[pos: m.start()])
        pieces.append(Piece(m.group(0), False))
        pos = m.end()
    add_free(text[pos:])
    return pieces


def join(pieces: list[Piece], translated: dict[str, str]) -> str:
    """Rebuild the text with each translatable piece replaced by its translation."""
    return "".join(translated[p.text] if p.translate else p.text for p in pieces)
