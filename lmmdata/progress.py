"""One rich progress bar for long steps (items/s, plus any live counters)."""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from .stats import console

T = TypeVar("T")


class ProgressBar:
    """A bar counting the items of `wrap(...)`; it stays open (and `extra()` keeps updating) until the
    `with` block ends, so counters that grow after the input is read (rows flushed at the end) show
    their final value."""

    def __init__(self, description: str, total: int | None = None, extra: Callable[[], str] | None = None,
                 unit: str = "records") -> None:
        self.description, self.total, self.extra, self.unit = description, total, extra, unit
        self.done = 0
        self.progress: Progress | None = None

    def __enter__(self) -> "ProgressBar":
        columns = [SpinnerColumn(), TextColumn(f"[bold]{self.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[extra]}"), TimeElapsedColumn()]
        self.progress = Progress(*columns, console=console, transient=False)
        self.progress.start()
        self.task = self.progress.add_task(self.description, total=self.total, rate="", extra="")
        return self

    def wrap(self, items: Iterable[T]) -> Iterator[T]:
        for item in items:
            yield item
            self.done += 1
            if self.done % 64 == 0:
                self.refresh()

    def refresh(self) -> None:
        if self.progress is None:
            return
        speed = self.progress.tasks[0].speed
        self.progress.update(self.task, completed=self.done, rate=f"{speed:,.0f} {self.unit}/s" if speed else "",
                             extra=self.extra() if self.extra else "")

    def __exit__(self, *exc) -> None:
        self.refresh()
        assert self.progress is not None
        self.progress.update(self.task, total=self.total if self.total is not None else self.done)
        self.progress.stop()


def track(items: Iterable[T], description: str, total: int | None = None,
          extra: Callable[[], str] | None = None, unit: str = "records") -> Iterator[T]:
    """Yield from `items` while showing count, rate and `extra()` (e.g. a cache hit rate)."""
    with ProgressBar(description, total, extra, unit) as bar:
        yield from bar.wrap(items)
