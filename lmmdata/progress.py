"""One rich progress bar for long steps (items/s, plus any live counters)."""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from .stats import console

T = TypeVar("T")


def track(items: Iterable[T], description: str, total: int | None = None,
          extra: Callable[[], str] | None = None, unit: str = "records") -> Iterator[T]:
    """Yield from `items` while showing count, rate and `extra()` (e.g. a cache hit rate)."""
    columns = [SpinnerColumn(), TextColumn(f"[bold]{description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[extra]}"), TimeElapsedColumn()]
    done = 0
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total, rate="", extra="")

        def refresh() -> None:
            speed = progress.tasks[0].speed
            progress.update(task, completed=done, rate=f"{speed:,.0f} {unit}/s" if speed else "",
                            extra=extra() if extra else "")

        for item in items:
            yield item
            done += 1
            if done % 64 == 0:
                refresh()
        refresh()
        progress.update(task, total=total if total is not None else done)
