"""Progress on long work: the rich bar every command shows, and the protocol the library reports to.

Library functions take ``progress: Reporter | None``; they add a task per stage and advance it, and
never print. ``rich.progress.Progress`` satisfies the protocol; ``None`` reports nothing.
"""
from __future__ import annotations

from typing import Any, Protocol

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class Reporter(Protocol):
    """What long work reports to (``rich.progress.Progress`` has this shape)."""

    def add_task(self, description: str, start: bool = True, total: float | None = 100.0,
                 completed: int = 0, visible: bool = True, **fields: Any) -> Any: ...

    def advance(self, task_id: Any, advance: float = 1) -> None: ...

    def update(self, task_id: Any, **kwargs: Any) -> None: ...


def progress_bar() -> Progress:
    """The bar of every long command: description, bar, done / total, elapsed time."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn())
