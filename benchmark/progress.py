"""Progress reporting with rich; silent when disabled (tests, Ray workers)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Reporter:
    """Shows one progress bar per running stage and one-line messages."""

    def __init__(self, enabled: bool = True, console: Console | None = None):
        self.enabled = enabled
        self.console = console or Console(stderr=True)

    def log(self, message: str) -> None:
        if self.enabled:
            self.console.print(message, highlight=False)

    def warn(self, message: str) -> None:
        """Printed even when progress is off (``--quiet``): something the user must know."""
        from rich.markup import escape

        self.console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[..., None]]:
        if not self.enabled:
            yield lambda n=1, **_: None
            return
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=self.console, transient=False) as progress:
            task_id = progress.add_task(description, total=total, loss=float("nan"))

            def advance(n: int = 1, **fields) -> None:
                progress.update(task_id, advance=n, **fields)

            yield advance
