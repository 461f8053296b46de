"""The timeline's point tasks on a dask.distributed cluster (`--scheduler ADDRESS`; `pip install -e .[cluster]`).

The same task function as the local workers (`points.compute`) runs on the cluster's workers: the held-out ids are
sent to them once per model, each checkpoint is read by the worker from its path (so the workers need the
same filesystem view of the checkpoints, and reportgen installed), and each point comes back to this process, which
writes it to the cache atomically as it arrives. A worker that dies is dask's to handle: the scheduler runs its
tasks again elsewhere (`distributed.scheduler.allowed-failures`); a task that raises is tried `RETRIES` more times.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .errors import ReportgenError
from .points import PointTask, compute

RETRIES = 2


def _on_worker(task: PointTask, ids: np.ndarray, classes) -> dict[str, np.ndarray]:
    """`compute` on a dask worker with one torch thread (as a local worker has), restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return compute(task, ids, classes)
    finally:
        torch.set_num_threads(threads)


def _text(ids: np.ndarray) -> np.ndarray:
    return ids


def run_on_cluster(address: str, batches: list[tuple[np.ndarray, object, list[PointTask]]],
                   on_done: Callable[[PointTask, dict[str, np.ndarray]], None]) -> None:
    """Compute every task of `batches` ((held-out ids, classes, tasks) per model) on the cluster whose scheduler
    listens at `address`, calling `on_done(task, point)` here as each point arrives."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise ReportgenError("--scheduler needs dask.distributed: pip install -e '.[cluster]' (or "
                             "pip install 'dask[distributed]')") from None
    try:
        client = Client(address, timeout="20s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise ReportgenError(f"--scheduler {address}: cannot connect to a dask scheduler ({exc})") from None
    with client:
        futures = {}
        for ids, classes, tasks in batches:
            if not tasks:
                continue
            # a task that returns the ids, not scattered data: the scheduler keeps its input and can run it again if
            # the worker holding the ids dies (scattered data would be lost with it, and every point waiting on it)
            shared = client.submit(_text, ids, key=f"reportgen-text-{tasks[0].key[:40]}", pure=False)
            keys = [f"reportgen-point-{t.key[:40]}" for t in tasks]
            for task, future in zip(tasks, client.map(_on_worker, tasks, ids=shared, classes=classes, key=keys,
                                                       retries=RETRIES)):
                futures[future] = task
        for future in as_completed(list(futures)):
            on_done(futures[future], future.result())

