"""Protected spans: what must never reach the translator and must come back byte-identical.

`segment` cuts a text into pieces, each either kept verbatim (`<image>` and any
`<...>` token, fenced and inline code, URLs, emoji, list markers, line breaks, white
space at piece edges, pieces with no letters, user regexes) or translated.
`join` puts translated pieces back in place, so structure survives by
construction.

Machine-translation models get each translatable piece alone. LLMs get whole
lines instead (`with_sentinels`): the protected spans inside a line are replaced
by numbered sentinels `<x1/>`, `<x2/>`, ... that the prompt tells the model to
keep; the spans themselves never reach the model, and `restore` puts them back
byte-identical. A literal sentinel in the source is itself a protected span, so
every sentinel in an answer is one of ours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BUILTIN = [
    r"```.*?```",  # fenced code
    r"`[^`\n]+`",  # inline code
    r"(?:https?|ftp)://[^\s<>\"'`]*[^\s<>\"'`.,;:!?)\]]",  # URLs, without trailing punctuation
    r"<[^<>\s][^<>\n]{0,40}>",  # <image>, <im_start>, </s>, ...
    "[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF][\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF\uFE0F\u200D\U0001F3FB-\U0001F3FF]*",  # emoji
    r"\n",  # line breaks: lines are translated one by one
    r"(?m:^[ \t]*(?:[-*•]|\d{1,3}[.)])[ \t]+)",  # list markers at line start
]


@dataclass(frozen=True)
class Piece:
    text: str
    translate: bool
    span: bool = False  # a protected match (kept verbatim; a sentinel inside an LLM line)
    spans: tuple[str, ...] = ()  # an LLM line: the spans behind its sentinels <x1/>, <x2/>, ...


def compile_patterns(extra: list[str] | tuple[str, ...] = ()) -> re.Pattern:
    """One alternation of the built-in protections plus `--protect` regexes."""
    for p in extra:
        try:
            re.compile(p)
        except re.error as e:
            raise ValueError(f"--protect {p!r} is not a valid regular expression: {e}") from None
    return re.compile("|".join(f"(?:{p})" for p in [*extra, *BUILTIN]), re.DOTALL)


LETTER = re.compile(r"[^\W\d_]")  # any letter, in any script
LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")  # a piece without one is already in a CJK target's script
SENTINEL = re.compile(r"<x(\d{1,4})\s*/?>")


def segment(text: str, pattern: re.Pattern, needs: re.Pattern = LETTER) -> list[Piece]:
    """Cut `text` into kept and translatable pieces; "".join(texts) == text. A piece is translated only when
    it has a match of `needs` (a letter; LATIN for a CJK target, so Chinese already there stays as it is)."""
    pieces: list[Piece] = []

    def add_free(free: str) -> None:
        if not free:
            return
        core = free.strip()
        if not core or not needs.search(core):
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
        pieces.append(Piece(m.group(0), False, span=True))
        pos = m.end()
    add_free(text[pos:])
    return pieces


def with_sentinels(pieces: list[Piece]) -> list[Piece]:
    """Merge the pieces of each line, from its first to its last translatable piece, into one translatable
    piece whose protected spans are numbered sentinels; spans with a line break and the protected ends of a
    line (list markers, a leading `<image>`) stay outside."""
    out: list[Piece] = []
    line: list[Piece] = []

    def flush() -> None:
        idx = [i for i, p in enumerate(line) if p.translate]
        if len(idx) <= 1:  # nothing or one piece to translate: no sentinel needed
            out.extend(line)
        else:
            a, b = idx[0], idx[-1] + 1
            text, spans = [], []
            for p in line[a:b]:
                if p.span:
                    spans.append(p.text)
                    text.append(f"<x{len(spans)}/>")
                else:
                    text.append(p.text)
            out.extend(line[:a])
            out.append(Piece("".join(text), True, spans=tuple(spans)))
            out.extend(line[b:])
        line.clear()

    for p in pieces:
        if p.span and "\n" in p.text:
            flush()
            out.append(p)
        else:
            line.append(p)
    flush()
    return out


def restore(template: str, spans: tuple[str, ...]) -> str:
    """Put each span back where its sentinel stands (by number, so a reordered answer keeps every span)."""
    return SENTINEL.sub(lambda m: spans[int(m.group(1)) - 1], template) if spans else template


def join(pieces: list[Piece], translated: dict[str, str]) -> str:
    """Rebuild the text with each translatable piece replaced by its translation."""
    return "".join(restore(translated[p.text], p.spans) if p.translate else p.text for p in pieces)
