"""Streaming JSON / JSONL reading and atomic writing of record files.

A LLaVA JSON file can be a gigabyte in one list; it is read element by element
with `json.JSONDecoder.raw_decode` over a bounded buffer, so memory stays at
the size of one record plus one chunk. Syntax errors are yielded as `BadItem`s
(never raised) so batch commands can count them and go on.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator, Sequence

from .config import ConfigError
from .staging import path_problem, remove_stale, staging_path

CHUNK = 1 << 20  # characters read at a time
MAX_ITEM = 64 << 20  # one record (JSONL line, JSON list element) larger than this is skipped as too_large
_DECODER = json.JSONDecoder()
_WS = re.compile(r"\s*")
# where a top-level record may start after a syntax error; `_looks_like_record` confirms it
_RESYNC = re.compile(r"[,\[]\s*(\{)")


@dataclass(frozen=True)
class Where:
    """Where an item came from: file, 1-based line, 0-based item index."""

    path: str
    line: int
    index: int

    def __str__(self) -> str:
        return f"{Path(self.path).name}:{self.line} (#{self.index})"


@dataclass
class BadItem:
    """An item that could not be parsed: reason key + human message."""

    where: Where
    reason: str
    message: str


def usable_path(path: str | os.PathLike, what: str = "path") -> Path:
    """`path` as a Path, or a setting error for strings no filesystem takes (NUL bytes, lone surrogates)."""
    text = str(path)
    problem = path_problem(text)
    if problem:
        raise ConfigError(f"{what} {text[:80]!r} is not a usable path: it {problem}")
    return Path(text)


def file_format(path: str | os.PathLike) -> str:
    """'json' or 'jsonl' from the file's extension; anything else is a setting error."""
    name = str(usable_path(path, "record file")).lower()
    if name.endswith(".jsonl") or name.endswith(".ndjson"):
        return "jsonl"
    if name.endswith(".json"):
        return "json"
    raise ConfigError(f"{path}: unknown record file extension; use .json (a list) or .jsonl (one record per line)")


def check_record_files(inputs: Sequence[str | os.PathLike], out: str | os.PathLike | None = None) -> None:
    """Inputs exist and every record file is .json/.jsonl: checked before a step reads or writes anything."""
    for p in inputs:
        file_format(p)
        if not Path(p).is_file():
            raise ConfigError(f"{p}: no such file")
    if out is not None:
        file_format(out)


def iter_items(path: str | os.PathLike) -> Iterator[tuple[Any, Where] | BadItem]:
    """Yield (value, where) for each element of a JSON list or line of a JSONL file."""
    path = str(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such record file")
    if file_format(path) == "jsonl":
        yield from _iter_jsonl(path)
    else:
        yield from _iter_json_array(path)


def _iter_jsonl(path: str) -> Iterator[tuple[Any, Where] | BadItem]:
    index = lineno = 0
    with open(path, "rb") as fh:
        while True:
            raw = fh.readline(MAX_ITEM + 1)  # never more than MAX_ITEM in memory, however long the line
            if not raw:
                break
            lineno += 1
            if not raw.strip():
                continue
            where = Where(path, lineno, index)
            index += 1
            if len(raw) > MAX_ITEM and not raw.endswith(b"\n"):
                size = len(raw)
                while raw and not raw.endswith(b"\n"):
                    raw = fh.readline(1 << 20)
                    size += len(raw)
                yield BadItem(where, "too_large", f"line of {size:,} bytes, over the {MAX_ITEM >> 20} MB a record may have")
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield BadItem(where, "bad_encoding", f"line is not UTF-8 ({e.reason} at byte {e.start})")
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as e:
                truncated = not raw.endswith(b"\n")
                reason = "truncated" if truncated else "malformed_json"
                yield BadItem(where, reason, f"malformed JSON: {e.msg} at column {e.colno}")
                continue
            except RecursionError:
                yield BadItem(where, "too_deep", TOO_DEEP)
                continue
            bad = _unicode_problem(value, text)
            yield BadItem(where, "bad_unicode", bad) if bad else (value, where)


class _Buffer:
    """A sliding text window over a file that tracks line numbers."""

    def __init__(self, fh: IO[str]):
        self.fh, self.buf, self.pos, self.eof = fh, "", 0, False
        self._line, self._counted = 1, 0

    def more(self) -> bool:
        if self.eof:
            return False
        if self.pos > CHUNK:  # drop what was consumed, keep line count
            self.line_at(self.pos)
            self.buf, self._counted = self.buf[self.pos :], self._counted - self.pos
            self.pos = 0
        data = self.fh.read(max(CHUNK, len(self.buf) - self.pos))
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def skip_ws(self) -> str:
        """Skip white space; return the next character ('' at end of file)."""
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.more():
                return ""

    def line_at(self, pos: int) -> int:
        if pos < self._counted:
            return self._line - self.buf.count("\n", pos, self._counted)
        if pos > self._counted:
            self._line += self.buf.count("\n", self._counted, pos)
            self._counted = pos
        return self._line


def _iter_json_array(path: str) -> Iterator[tuple[Any, Where] | BadItem]:
    with open(path, "r", encoding="utf-8", errors="strict") as fh:
        b = _Buffer(fh)
        index = 0
        try:
            if b.skip_ws() != "[":
                yield BadItem(Where(path, 1, 0), "malformed_json", "a .json record file must hold one JSON list; use .jsonl for one record per line")
                return
            b.pos += 1
            expect_value = True
            while True:
                c = b.skip_ws()
                where = Where(path, b.line_at(b.pos), index)
                if c == "":
                    yield BadItem(where, "truncated", "file ends before the closing ']' (truncated?)")
                    return
                if c == "]":
                    return
                if expect_value:
                    start = b.pos
                    item = _decode_one(b)
                    index += 1
                    if not isinstance(item, BadItem):
                        bad = _unicode_problem(item, b.buf[start:b.pos])
                        item = BadItem(where, "bad_unicode", bad) if bad else item
                elif c == ",":
                    b.pos += 1
                    expect_value = True
                    continue
                else:
                    item = BadItem(where, "malformed_json", f"expected ',' or ']' after a record, found {c!r}")
                if isinstance(item, BadItem):
                    item.where = where
                    yield item
                    if item.reason in WHOLE_VALUE:  # the value's end is known: go on after it, nothing to resync
                        expect_value = False
                        continue
                    if item.reason == "truncated":
                        return
                    found = _resync(b)
                    if found is None:
                        return
                    item, line = found
                    where = Where(path, line, index)
                    index += 1
                yield item, where
                expect_value = False
        except UnicodeDecodeError as e:
            yield BadItem(Where(path, b.line_at(b.pos), index), "bad_encoding", f"file is not UTF-8 ({e.reason}); the rest was not read")


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
WHOLE_VALUE = ("too_deep", "bad_unicode")  # bad items whose extent was read exactly
TOO_DEEP = "nested deeper than the JSON parser allows (about 1,000 levels): not a record"


def _unicode_problem(value: Any, source: str) -> str | None:
    """Why decoded JSON is not valid Unicode text (a lone UTF-16 surrogate from a \\udXXX escape), or None.

    Only text with such an escape is walked, so ordinary records cost one regex scan."""
    if not _SURROGATE_ESCAPE.search(source):
        return None
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError as e:
                return f"string holds a lone UTF-16 surrogate ({v[e.start]!r}): not valid Unicode text"
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return None


def _skip_value(b: _Buffer) -> int | None:
    """End of the bracketed value at b.pos (strings respected), reading more text as needed; None at EOF."""
    depth, i, in_str = 0, b.pos, False
    while True:
        buf = b.buf
        while i < len(buf):
            c = buf[i]
            if in_str:
                if c == "\\":
                    i += 1
                elif c == '"':
                    in_str = False
            elif c == '"':
                in_str = True
            elif c in "[{":
                depth += 1
            elif c in "]}":
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        offset = b.pos
        if not b.more():
            return None
        i -= offset - b.pos  # the window may have been shifted


def _decode_one(b: _Buffer) -> Any:
    """Decode the value at b.pos, reading more text while it is incomplete."""
    while True:
        try:
            value, end = _DECODER.raw_decode(b.buf, b.pos)
        except RecursionError:
            end = _skip_value(b)
            if end is None:
                return BadItem(None, "truncated", "file ends inside a record (truncated?)")  # type: ignore[arg-type]
            b.pos = end
            return BadItem(None, "too_deep", TOO_DEEP)  # type: ignore[arg-type]
        except json.JSONDecodeError as e:
            # an error near the end of the window may just be a token cut by the chunk edge
            near_end = e.pos >= len(b.buf) - 64 or e.msg.startswith("Unterminated string")
            if near_end and len(b.buf) - b.pos >= MAX_ITEM:
                return BadItem(None, "too_large", f"a record over {MAX_ITEM >> 20} MB")  # type: ignore[arg-type]
            if near_end and b.more():
                continue
            if b.eof and (not b.buf[e.pos :].strip() or e.msg.startswith("Unterminated string")):
                return BadItem(None, "truncated", f"file ends inside a record: {e.msg} (truncated?)")  # type: ignore[arg-type]
            return BadItem(None, "malformed_json", f"malformed JSON: {e.msg} at line {b.line_at(e.pos)}")  # type: ignore[arg-type]
        if end >= len(b.buf) and not b.eof and b.more():
            continue  # a number may go on in the next chunk
        b.pos = end
        return value


def _resync(b: _Buffer) -> tuple[Any, int] | None:
    """After a syntax error, find the next top-level-looking record that decodes.

    Returns (record, line) with b.pos after it, or None at end of file.
    """
    search_from = b.pos + 1
    while True:
        m = _RESYNC.search(b.buf, search_from)
        if m is None:
            b.pos = max(b.pos, len(b.buf) - 64)  # a match may straddle the chunk edge
            if not b.more():
                return None
            search_from = b.pos
            continue
        b.pos = m.start(1)
        line = b.line_at(b.pos)
        value = _decode_one(b)
        if isinstance(value, dict) and _looks_like_record(value):
            return value, line
        if isinstance(value, BadItem) and value.reason == "truncated":
            return None
        search_from = b.pos + 1


def _looks_like_record(value: dict) -> bool:
    return any(k in value for k in ("conversations", "messages", "instruction", "id"))


def dumps(record: Any) -> str:
    """The one serialisation used for every record file (UTF-8, key order kept)."""
    return json.dumps(record, ensure_ascii=False)


class RecordWriter:
    """Write records to .json or .jsonl atomically: a temp file renamed on success.

    An interrupted run leaves any earlier OUT untouched. Use as a context manager.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.fmt = file_format(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(self.path)
        self.tmp = staging_path(self.path)
        self.count = 0
        self._fh: IO[str] | None = None

    def __enter__(self) -> "RecordWriter":
        self._fh = open(self.tmp, "w", encoding="utf-8", newline="\n")
        if self.fmt == "json":
            self._fh.write("[")
        return self

    def write(self, record: Any) -> None:
        self.write_line(dumps(record))

    def write_line(self, line: str) -> None:
        """Write one record already serialised with `dumps` (no newline)."""
        assert self._fh is not None, "use RecordWriter as a context manager"
        if self.fmt == "json":
            self._fh.write(",\n" if self.count else "\n")
            self._fh.write(line)
        else:
            self._fh.write(line)
            self._fh.write("\n")
        self.count += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._fh is not None
        if exc_type is None:
            if self.fmt == "json":
                self._fh.write("\n]\n" if self.count else "]\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            os.replace(self.tmp, self.path)
        else:
            self._fh.close()
            self.tmp.unlink(missing_ok=True)
