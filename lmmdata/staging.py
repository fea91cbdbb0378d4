"""Names for outputs written atomically (a hidden staging file or directory, renamed when complete), and the
removal of staging left by processes that died (kill -9, OOM, a lost node) before they could clean up.

A name holds the host and the process id (`.OUT.tmp-HOST-PID`), so a run removes only what a process of its own
host left behind and that process is gone; staging of live runs, or of runs on other hosts sharing the
filesystem, is never touched.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from pathlib import Path

KINDS = ("tmp", "old")
MAX_PATH_BYTES = 4096  # PATH_MAX on Linux; longer strings are not paths any filesystem accepts


def path_problem(text: str, max_bytes: int | None = None) -> str | None:
    """Why no filesystem takes `text` as a path (empty, a NUL byte, lone surrogates, over `max_bytes`), or None."""
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode"
    if "\0" in text:
        return "holds a NUL byte"
    if not text:
        return "is empty"
    if max_bytes is not None and len(encoded) > max_bytes:
        return f"is longer than {max_bytes} bytes"
    return None


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a small text file (manifest, config, progress) so readers see the old or the new one, never half."""
    tmp = staging_path(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"


def staging_path(out: str | os.PathLike, kind: str = "tmp") -> Path:
    """The hidden sibling of `out` this process writes before renaming it into place."""
    out = Path(out)
    return out.parent / f".{out.name}.{kind}-{_host()}-{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process, or a number no pid can be: not ours to judge, keep it
    return True


def remove_stale(out: str | os.PathLike) -> list[Path]:
    """Remove staging of `out` left by dead processes of this host; returns what was removed."""
    out = Path(out)
    if not out.parent.is_dir():
        return []
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(?:{'|'.join(KINDS)})-(?:(?P<host>.+)-)?(?P<pid>\d+)")
    removed = []
    for p in out.parent.iterdir():
        m = pattern.fullmatch(p.name)
        if not m or (m.group("host") not in (None, _host())) or _alive(int(m.group("pid"))):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed
