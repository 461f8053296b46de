"""Analysis jobs of several models side by side in forked worker processes, with their progress bars kept.

A run's models (and their seeds) are independent until the FDR step and again after it, so on a machine with
several cores the jobs of each stage run in a pool of forked workers, one torch thread each (as PyTorch's own
DataLoader workers do: a forked child that stays single-threaded never enters the parent's OpenMP pool). Every
job draws from its own seeded streams (`np.random.default_rng([seed, model index, ...])`), so the numbers do not
depend on which worker runs it or in which order. Each worker's progress tasks are relayed to the parent's bars
(so `stage_seconds` still sees every stage). Only on Linux with the CPU device; elsewhere the jobs run in turn.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, Callable

import torch

from .errors import ReportgenError

_JOBS: list[Callable[[Any], Any]] = []  # set before the pool forks: children inherit them, nothing is pickled
_QUEUE = None  # progress messages from the workers: ("add", job, task, description, total, visible) | ("adv", job, task, n)


class Relay:
    """The slice of rich's Progress the analysis uses (`add_task`, `advance`), forwarded to the parent's bars."""

    def __init__(self, job: int):
        self.job, self.count = job, 0

    def add_task(self, description: str, total: float | None = None, visible: bool = True, **_) -> int:
        self.count += 1
        _QUEUE.put(("add", self.job, self.count, description, total, visible))
        return self.count

    def advance(self, task: int, advance: float = 1) -> None:
        _QUEUE.put(("adv", self.job, task, advance))


def die_with_parent(parent: int) -> None:
    """Pool initializer: on Linux a worker (analysis or figures) is killed when the run that started it dies, by
    any signal (SIGKILL included: PR_SET_PDEATHSIG), so a killed run leaves no worker behind."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _start(parent: int, threads: int) -> None:
    die_with_parent(parent)
    torch.set_num_threads(threads)  # before any parallel region in this process


def _run(job: int) -> Any:
    return _JOBS[job](Relay(job))


def count(device: torch.device, jobs: int, limit: int | None = None) -> int:
    """How many workers a stage of `jobs` jobs gets: the cores this process may use (at most the torch threads it
    was given, and at most `limit`: `--workers`), on Linux with the CPU device; 1 means run in turn."""
    if sys.platform != "linux" or device.type != "cpu" or jobs < 2:
        return 1
    cores = len(os.sched_getaffinity(0))
    return max(1, min(jobs, cores, torch.get_num_threads(), limit or cores))


def run_jobs(jobs: list[Callable[[Any], Any]], progress, workers: int, retries: int = 0,
             on_done: Callable[[int, Any], None] | None = None,
             meanwhile: Callable[[], None] | None = None) -> list[Any]:
    """Each job called with a progress object (`add_task`/`advance`); results in the jobs' order, each also handed
    to `on_done(index, result)` in this process as it arrives. With `workers` > 1 they run in forked workers and
    their results come back pickled (so a job returns plain data, not models). A job's exception is raised here; a
    worker that dies (killed, out of memory) breaks the pool, and the jobs without a result run again in a fresh
    pool, up to `retries` times, before that is an error. `meanwhile()` runs once in this process while the jobs
    do, after every worker is forked (so it may import; e.g. what the next stage needs), else before them."""
    on_done = on_done or (lambda j, result: None)
    out: dict[int, Any] = {}
    if workers <= 1:
        if meanwhile is not None:
            meanwhile()
        for j, job in enumerate(jobs):
            out[j] = job(progress)
            on_done(j, out[j])
        return list(out.values())
    for attempt in range(retries + 1):
        lost = _attempt(jobs, [j for j in range(len(jobs)) if j not in out], progress, workers, out, on_done,
                        meanwhile if attempt == 0 else None)
        if not lost:
            return [out[j] for j in range(len(jobs))]
    raise ReportgenError(f"a worker process died (killed, or out of memory) {retries + 1} time(s); {len(lost)} "
                         f"job(s) did not finish")


def _attempt(jobs: list[Callable[[Any], Any]], todo: list[int], progress, workers: int, out: dict[int, Any],
             on_done: Callable[[int, Any], None], meanwhile: Callable[[], None] | None = None) -> list[int]:
    """Run jobs `todo` in a pool of forked workers, results into `out`; the jobs lost to a dead worker."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    global _QUEUE
    ctx = multiprocessing.get_context("fork")
    _JOBS[:] = jobs
    _QUEUE = queue = ctx.Queue()
    tasks: dict[tuple[int, int], Any] = {}

    def relay() -> None:
        while (msg := queue.get()) is not None:
            if msg[0] == "add":
                tasks[msg[1], msg[2]] = progress.add_task(msg[3], total=msg[4], visible=msg[5])
            else:
                progress.advance(tasks[msg[1], msg[2]], msg[3])

    listener = threading.Thread(target=relay, daemon=True)
    listener.start()
    threads = max(1, torch.get_num_threads() // workers)
    pool = ProcessPoolExecutor(min(workers, len(todo)), mp_context=ctx, initializer=_start,
                               initargs=(os.getpid(), threads))
    clean = False  # every worker exited by itself: none can have died holding the queue's write lock
    try:
        futures = {pool.submit(_run, j): j for j in todo}  # the first submit forks every worker (fork context)
        if meanwhile is not None:
            meanwhile()
        lost = []
        for f in as_completed(futures):  # a broken pool fails every job it had not finished
            error = f.exception()
            if isinstance(error, BrokenProcessPool):
                lost.append(futures[f])
            elif error is not None:
                raise error
            else:
                out[futures[f]] = f.result()
                on_done(futures[f], out[futures[f]])
        pool.shutdown(wait=True)  # the workers exit, their last progress messages sent
        clean = not lost
        return sorted(lost)
    finally:
        for process in list((getattr(pool, "_processes", None) or {}).values()):  # a job failed: stop the rest
            if process.is_alive():
                process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        if not clean:  # a worker killed (by us, or the system) while sending progress holds the queue's lock for
            queue.cancel_join_thread()  # good, maybe mid-message: the stop below may never arrive; exit must not wait
        queue.put(None)
        listener.join(None if clean else 5.0)  # else its bars may stay short; the run is failing or retrying anyway
        _QUEUE = None
        _JOBS.clear()
