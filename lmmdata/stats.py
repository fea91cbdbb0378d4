"""Per-command counters, bad-record reporting and the closing summary table.

Every batch command owns one `Stats`: it counts what was read, written and
skipped (by reason), prints the first few bad records as they come, optionally
writes every reject to a JSONL file, and ends with a rich table.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.table import Table

console = Console(stderr=True)
SHOW_FIRST = 10  # bad records printed one by one; the rest only counted


@dataclass
class Stats:
    """Counters of one run; `skip` records a bad record with its reason."""

    command: str
    counts: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    flags: Counter = field(default_factory=Counter)
    extra: dict[str, Any] = field(default_factory=dict)
    rejects: IO[str] | None = None
    quiet: bool = False
    rejects_path: str | None = None  # where `rejects` goes; opened by open_rejects (lazily at the first skip)

    def open_rejects(self, keep: int = 0) -> None:
        """Open the rejects file: a new one, or, when a run resumes, the one written so far cut to `keep` bytes
        (what its last committed chunk had written), so the result equals an uninterrupted run's."""
        if not self.rejects_path:
            return
        path = Path(self.rejects_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if keep and path.is_file():
            fh = open(path, "r+", encoding="utf-8", newline="\n")
            fh.truncate(keep)
            fh.seek(keep)
        else:
            fh = open(path, "w", encoding="utf-8", newline="\n")
        self.rejects = fh

    def rejects_committed(self) -> int:
        """Flush the rejects file to disk and return its length (for a resumable run's progress record)."""
        if self.rejects is None:
            return 0
        self.rejects.flush()
        os.fsync(self.rejects.fileno())
        return self.rejects.tell()

    def close_rejects(self) -> None:
        if self.rejects_path and self.rejects is None:
            self.open_rejects()  # a run without rejects still leaves the (empty) file it was asked for
        if self.rejects is not None:
            self.rejects.close()
            self.rejects = None

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] += n

    def flag(self, key: str, n: int = 1) -> None:
        """Count a record that was kept but marked (e.g. suspicious translation)."""
        self.flags[key] += n

    def skip(self, where: Any, record_id: Any, reason: str, message: str) -> None:
        """Count a skipped record and say which one and why."""
        self.skipped[reason] += 1
        total = sum(self.skipped.values())
        name = f"{where}" + (f" id={record_id}" if record_id is not None else "")
        if not self.quiet and total <= SHOW_FIRST:
            console.print(f"[yellow]skipped[/] {name}: {message} [dim]({reason})[/]", highlight=False)
        elif not self.quiet and total == SHOW_FIRST + 1:
            console.print("[yellow]... more bad records; they are counted in the summary[/]")
        if self.rejects is None and self.rejects_path:
            self.open_rejects()
        if self.rejects is not None:
            row = {"where": str(where), "id": record_id, "reason": reason, "message": message}
            self.rejects.write(json.dumps(row, ensure_ascii=False) + "\n")

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            **dict(self.counts),
            "skipped": dict(self.skipped),
            "flagged": dict(self.flags),
            **self.extra,
        }

    def table(self) -> Table:
        t = Table(title=f"lmmdata {self.command}: summary", title_justify="left")
        t.add_column("what")
        t.add_column("count", justify="right")
        for k, v in self.counts.items():
            t.add_row(k, f"{v:,}")
        t.add_row("skipped", f"{self.n_skipped:,}", style="yellow" if self.n_skipped else None)
        for k, v in sorted(self.skipped.items()):
            t.add_row(f"  skipped_{k}", f"{v:,}", style="yellow")
        for k, v in sorted(self.flags.items()):
            t.add_row(f"flagged_{k}", f"{v:,}", style="magenta")
        for k, v in self.extra.items():
            t.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
        return t

    def print_summary(self) -> None:
        if not self.quiet:
            Console(file=sys.stdout).print(self.table())
