"""A persistent translation cache: sqlite, keyed by backend identity + source text.

LLaVA data repeats questions heavily, and datasets share them; a rerun or a
second dataset translated with the same backend and model reuses every string
already done. Writes are committed per chunk, so a killed run loses at most the
chunk in flight.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lmm-toolkit" / "translate"


class TranslationCache:
    """get_many / put_many over a sqlite table (key = sha256(backend id, text))."""

    def __init__(self, directory: str | os.PathLike | None, backend_id: str):
        d = Path(directory) if directory else default_cache_dir()
        d.mkdir(parents=True, exist_ok=True)
        self.path = d / "translations.sqlite"
        self.backend_id = backend_id
        self.db = sqlite3.connect(self.path, timeout=60)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS t (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    def _key(self, text: str) -> str:
        return hashlib.sha256(f"{self.backend_id}\0{text}".encode()).hexdigest()

    def get_many(self, texts: list[str]) -> dict[str, str]:
        keys = {self._key(t): t for t in texts}
        found: dict[str, str] = {}
        items = list(keys)
        for i in range(0, len(items), 500):
            part = items[i: i + 500]
            q = f"SELECT key, value FROM t WHERE key IN ({','.join('?' * len(part))})"
            for k, v in self.db.execute(q, part):
                found[keys[k]] = v
        return found

    def put_many(self, pairs: dict[str, str]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO t VALUES (?, ?)", [(self._key(k), v) for k, v in pairs.items()])
        self.db.commit()

    def close(self) -> None:
        self.db.close()
