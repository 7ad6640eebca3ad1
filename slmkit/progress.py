"""Progress bars for long work (pulling, assembling, quantizing), on stderr so stdout stays clean."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

_console = Console(stderr=True, markup=False, highlight=False)  # descriptions name user files


@contextmanager
def progress_bar(
    description: str, total: float, *, enabled: bool = True, unit: str = "items"
) -> Iterator[Callable[..., None]]:
    """Yields ``update(completed, total=None)`` (a new `total` when the work grows); draws a bar on
    stderr when enabled and stderr is a terminal, else prints one line when done."""
    if not enabled:
        yield lambda completed, total=None: None
        return
    if not _console.is_terminal:
        yield lambda completed, total=None: None
        _console.print(f"{description}: done")
        return
    columns = [TextColumn("{task.description}"), BarColumn(), TaskProgressColumn()]
    columns.append(DownloadColumn() if unit == "bytes" else MofNCompleteColumn())
    columns.append(TimeRemainingColumn())
    with Progress(*columns, console=_console, transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield lambda completed, total=None: progress.update(task, completed=completed, total=total)
        progress.update(task, completed=progress.tasks[0].total)


def status(message: str, *, enabled: bool = True) -> None:
    if enabled:
        _console.print(message)
