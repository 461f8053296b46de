"""The two sides of a diff: results as they were written, or checkpoints analysed first (and cached).

A checkpoint's analysis is kept in the diff cache ($REPORTGEN_CACHE, else ~/.cache/reportgen), keyed by the
checkpoint's bytes, the texts, the settings and the code, so a re-diff reads it back in seconds. When both sides
are checkpoints still to be analysed on the CPU of a Linux machine with two or more cores, side B is analysed in a
forked process while this one analyses side A, each with half the torch threads (on 2 cores a diff of two shipped
checkpoints takes 12.9-13.4 s instead of 14.7-15.8 s one side after the other at two threads, measured alternately;
numpy's OpenBLAS runs on one thread, see `cli._one_blas_thread`); B's analysis comes back through the cache. Both ways
give the same numbers: every per-window value is identical at one and at two torch threads, and the class matrices,
sums over all windows, are summed in float64 so the thread count cannot move their printed digits (tested).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ReportgenError
from .outputs import OutputFolder
from .points import cache_root
from .progress import say
from .results import Run, read_run
from .stages import FigureInputs


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
    """A checkpoint's analysis settings and where its cached analysis lives: (config, cache folder)."""
    from .checkpoint import load_checkpoint
    from .config import ModelSpec, build_config
    from .languages import LANGUAGE

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
    return cfg, _cache_folder(cfg)


def run_data(path: Path, **options) -> RunData:
    """Results (folder or results.json) as they are; a checkpoint is analysed first (default settings, or those of
    `toml`; its own language and corpus unless `language`/`text` are given; no emergence timeline), labelled by
    its language and file name. Options: language, text, heldout, toml, device, causal (see `_plan`)."""
    if _is_results(path):
        return load_results(path)
    from .analyze import analyze, new_run

    cfg, cached = _plan(path, **options)
    if (cached / "results.json").is_file():  # the same checkpoint, text, settings and code were analysed before
        say(f"{path}: analysis reused from the cache")
        folder = OutputFolder(cached)
        return RunData(path, read_run(cached), folder.read_windows(), _means(folder.read_figure_inputs()))
    analysed = analyze(cfg)
    run = new_run(cfg, analysed.models)
    _store(cached, run, analysed.windows, analysed.figure_inputs)
    stored = cached / "results.json"  # read back: the run as results.json holds it, without encoding it again
    return RunData(path, read_run(stored) if stored.is_file() else run.normalised(), analysed.windows,
                   _means(analysed.figure_inputs))


def both_sides(a: Path, b: Path, **options) -> tuple[RunData, RunData]:
    """Side A and side B (see `run_data`); B analysed in a forked process alongside A where that helps. Both
    checkpoints are opened first, so a missing or bad B is reported before A is analysed."""
    import torch

    # the one-line error of a missing or unreadable checkpoint or setting comes here, before any analysis
    cached = {path: _plan(path, **options)[1] for path in (a, b) if not _is_results(path)}
    if not _parallel(a, b, cached, options):
        return run_data(a, **options), run_data(b, **options)
    import multiprocessing

    threads = torch.get_num_threads()
    child = multiprocessing.get_context("fork").Process(target=_analyse_quietly,
                                                        args=(b, options, threads // 2, cached[b]))
    torch.set_num_threads(threads - threads // 2)
    started = time.perf_counter()
    child.start()
    say(f"{b}: analysed in a second process alongside {a}")
    try:
        first = run_data(a, **options)
        child.join()
    finally:
        if child.is_alive():  # side A failed or was interrupted: B's analysis is no longer wanted
            child.terminate()
            child.join()
        torch.set_num_threads(threads)
    if child.exitcode == 0:
        say(f"{b}: analysed alongside in {time.perf_counter() - started:.1f} s")
    return first, run_data(b, **options)  # from the cache B's process filled, or analysed here if it failed


def _parallel(a: Path, b: Path, cached: dict[Path, Path], options: dict) -> bool:
    """Both sides are CPU analyses still to do (`cached`: checkpoint -> its cache folder), on Linux (fork) with
    two or more torch threads."""
    import torch

    from .device import resolve

    if sys.platform != "linux" or torch.get_num_threads() < 2 or len(cached) < 2 or a.resolve() == b.resolve():
        return False
    if resolve(options.get("device")).type != "cpu":
        return False
    return not any((folder / "results.json").is_file() for folder in cached.values())


def _analyse_quietly(path: Path, options: dict, threads: int, cached: Path) -> None:
    """Forked child: analyse one side into its cache folder `cached` with `threads` torch threads, printing
    nothing (the parent prints its own progress; an error here is reported by the parent, which then analyses this
    side itself)."""
    import torch

    from .progress import stderr

    torch.set_num_threads(max(1, threads))  # before any parallel region: OpenMP is not fork-safe otherwise
    stderr.quiet = True
    try:
        run_data(path, **options)
        stored = (cached / "results.json").is_file()  # False: the cache could not be written
    except BaseException:  # noqa: BLE001 - reported by the parent, which analyses this side again
        os._exit(1)
    os._exit(0 if stored else 1)


def _cache_folder(cfg) -> Path:
    from .pipeline import analysis_key

    return cache_root() / "diff" / analysis_key(cfg)[:40]


def _store(folder: Path, run: Run, windows: dict, figure_inputs: list[FigureInputs]) -> None:
    """Keep an analysis for later diffs (written beside, then renamed: a half-written entry is never read)."""
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        out = OutputFolder(tmp, compress=False)  # written once per checkpoint, read by every later diff
        out.write_run(run)
        out.write_windows(windows)
        out.write_figure_inputs(figure_inputs)
        tmp.replace(folder)
    except OSError:  # a read-only or full cache only costs time
        shutil.rmtree(tmp, ignore_errors=True)
