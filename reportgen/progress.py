"""Rich progress bars and logging on stderr, so stdout stays clean for data."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

stderr = Console(stderr=True)


def say(text: str) -> None:
    """One plain line on stderr: paths and labels are printed as they are, never read as rich markup."""
    stderr.print(text, markup=False, highlight=False, soft_wrap=True)


def make_progress() -> Progress:
    """A progress display for multi-stage work: description, bar, count, elapsed and ETA."""
    return Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=stderr, transient=False,
    )
