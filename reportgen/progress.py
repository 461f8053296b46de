"""Rich progress bars and logging on stderr, so stdout stays clean for data."""

from __future__ import annotations

import re

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


def stage_seconds(progress: Progress) -> dict[str, float]:
    """Elapsed seconds per stage, summed over models: a task "English: capture heldout (1363 windows)" counts as
    "capture heldout" (what `scripts/benchmark.py` prints as each stage's share); bars added with `span=True` are
    left out."""
    out: dict[str, float] = {}
    for task in progress.tasks:
        if task.fields.get("span"):  # a bar over jobs that share a pool with others: its time is not their work
            continue
        name = re.sub(r"\s*\(.*\)$", "", task.description.split(": ", 1)[-1])
        name = re.sub(r" over \d+ checkpoints$", "", name)
        took = task.finished_time if task.finished_time is not None else task.elapsed  # from its start to done
        out[name] = round(out.get(name, 0.0) + (took or 0.0), 2)
    return out
