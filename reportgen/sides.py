"""The two sides of a diff: results as they were written, or checkpoints analysed first (and cached).

A checkpoint's analysis is an entry of the cache of per-checkpoint analyses (`taskcache`: `analysis/<key>/`, keyed
by `pipeline.analysis_key`: the checkpoint's bytes and the files beside it, the texts, the settings and the code), so
a re-diff, or a diff that shares a side with an earlier one, reads it back in seconds. When both sides are
checkpoints still to be analysed, they run as two jobs on the path the timeline's tasks take (`workers.run_jobs`:
forked workers, on Linux with the CPU and two or more torch threads), each with half the threads (on 2 cores a diff
of two shipped checkpoints took 12.9-13.4 s instead of 14.7-15.8 s one side after the other at two threads,
measured alternately; numpy's OpenBLAS runs on one thread, see `process.one_blas_thread`). The workers print nothing;
a side whose worker fails is analysed here afterwards, so a failure costs only time, and a real error is reported
from this process in one line. Both ways give the same numbers: every per-window value is identical at one and at
two torch threads, and the class matrices, sums over all windows, are summed in float64 so the thread count cannot
move their printed digits (tested).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from . import taskcache
from .errors import ReportgenError
from .outputs import OutputFolder
from .progress import say
from .results import Run, read_run
from .stages import FigureInputs

ANALYSIS = "analysis"  # the cache's kind for a checkpoint's whole analysis


@dataclass(frozen=True)
class RunData:
    """One side of a diff: the typed run and, if available, per-window held-out values."""

    source: Path
    run: Run
    windows: dict[str, dict[str, np.ndarray]]  # model label -> detector -> (W, L, H)
    mean_attn: dict[str, np.ndarray] = field(default_factory=dict)  # model label -> (L, H, T, S) held-out mean


def _means(items: list[FigureInputs] | None) -> dict[str, np.ndarray]:
    return {it.label: it.mean_attn for it in items or []}


def load_results(path: Path) -> RunData:
    """A results folder or results.json; errors name the file."""
    file = path / "results.json" if path.is_dir() else path
    folder = OutputFolder(file.parent)
    return RunData(file.parent, read_run(file), folder.read_windows(), _means(folder.read_figure_inputs()))


def _is_results(path: Path) -> bool:
    return path.is_file() and path.suffix == ".json" or (path.is_dir() and (path / "results.json").exists())


def _plan(path: Path, language: str | None = None, text: Path | None = None, heldout: Path | None = None,
          toml: Path | None = None, device: str | None = None, causal: bool = False):
    """A checkpoint's analysis settings and the key of its cached analysis: (config, key)."""
    from .checkpoint import load_checkpoint
    from .config import ModelSpec, build_config
    from .languages import LANGUAGE
    from .pipeline import analysis_key

    if not path.exists():
        raise ReportgenError(f"{path}: not found (expected a results folder, results.json or a checkpoint)")
    bundle = load_checkpoint(path)
    language = language or bundle.language
    name = LANGUAGE[language].name if language in LANGUAGE else ""
    label = f"{name} {path.stem}".strip()  # the file name tells the two sides apart in progress lines
    # A diff compares two checkpoints: their emergence timelines are not needed, and the causal stage (ablation,
    # controls, generation) runs only when asked for (`--causal`): without it the diff is of attention statistics.
    cfg = build_config(toml, models=(ModelSpec(path, label, language, text, heldout),), out=Path("unused"),
                       timeline_windows=0, device=device, **({} if causal else {"ablation_windows": 0}))
    return cfg, analysis_key(cfg)


def run_data(path: Path, **options) -> RunData:
    """Results (folder or results.json) as they are; a checkpoint is analysed first (default settings, or those of
    `toml`; its own language and corpus unless `language`/`text` are given; no emergence timeline), labelled by
    its language and file name, or read from the cache. Options: language, text, heldout, toml, device, causal (see
    `_plan`)."""
    if _is_results(path):
        return load_results(path)
    from .analyze import analyze, new_run

    cfg, key = _plan(path, **options)
    cached = taskcache.read(ANALYSIS, key, partial(_load, path))
    if cached is not None:  # the same checkpoint, text, settings and code were analysed before
        say(f"{path}: analysis reused from the cache")
        return cached
    analysed = analyze(cfg)
    run = new_run(cfg, analysed.models).normalised()  # the run as results.json holds it (as a cached one is read)
    taskcache.store(ANALYSIS, key, partial(_write, run, analysed.windows, analysed.figure_inputs))
    return RunData(path, run, analysed.windows, _means(analysed.figure_inputs))


def both_sides(a: Path, b: Path, **options) -> tuple[RunData, RunData]:
    """Side A and side B (see `run_data`); analysed side by side in two workers where both still need analysing and
    that helps. Both checkpoints are opened first, so a missing or bad B is reported before A is analysed."""
    from . import workers
    from .device import resolve

    # the one-line error of a missing or unreadable checkpoint or setting comes here, before any analysis
    keys = {path: _plan(path, **options)[1] for path in (a, b) if not _is_results(path)}
    todo = list({key: path for path, key in keys.items() if not taskcache.entry(ANALYSIS, key).exists()}.values())
    count = workers.count(resolve(options.get("device")), len(todo))
    got = _alongside(todo, options, count) if count > 1 else {}
    return got.get(a) or run_data(a, **options), got.get(b) or run_data(b, **options)


def _alongside(paths: list[Path], options: dict, count: int) -> dict[Path, RunData]:
    """Each checkpoint of `paths` analysed in `count` forked workers (`workers.run_jobs`, each with its share of the
    torch threads), cached there and returned here; a side whose worker failed is left out (analysed again here)."""
    from .workers import run_jobs

    got: dict[Path, RunData] = {}

    def done(j: int, side: RunData | str) -> None:
        if isinstance(side, str):
            say(f"{paths[j]}: analysis in a worker process failed ({side}); analysing it here")
        else:
            got[paths[j]] = side

    started = time.perf_counter()
    say(f"{' and '.join(map(str, paths))}: analysed side by side in {count} worker processes")
    try:  # the jobs report no progress: the workers are quiet, and this process says when they are done
        run_jobs([partial(_quietly, path, options) for path in paths], None, count, on_done=done)
    except ReportgenError as exc:  # a worker died (killed, out of memory): its side is analysed here
        say(f"{' '.join(str(exc).split())}; analysing {' and '.join(str(p) for p in paths if p not in got)} here")
        return got
    if len(got) == len(paths):
        say(f"{' and '.join(map(str, paths))}: analysed side by side in {time.perf_counter() - started:.1f} s")
    return got


def _quietly(path: Path, options: dict, progress) -> RunData | str:
    """A `workers.run_jobs` job (run in a forked worker): one side's `run_data`, printing nothing; an error comes back
    as its one-line message, so that the other side's analysis goes on."""
    from .progress import stderr

    stderr.quiet = True
    try:
        return run_data(path, **options)
    except Exception as exc:  # noqa: BLE001 - reported by the parent, which analyses this side again
        return " ".join(f"{type(exc).__name__}: {exc}".split())


def _load(path: Path, folder: Path) -> RunData:
    """A cached analysis (`taskcache.read` treats any error, or missing figure inputs, as a damaged entry)."""
    stored = OutputFolder(folder)
    means = stored.read_figure_inputs()
    if means is None:
        raise ReportgenError(f"{folder}: no readable figure inputs")
    return RunData(path, read_run(folder), stored.read_windows(), _means(means))


def _write(run: Run, windows: dict, figure_inputs: list[FigureInputs], folder: Path) -> None:
    """An analysis into a new cache folder (`taskcache.store` renames it into place)."""
    out = OutputFolder(folder, compress=False)  # written once per checkpoint, read by every later diff
    out.write_run(run)
    out.write_windows(windows)
    out.write_figure_inputs(figure_inputs)
