"""Emergence timeline: how strongly each of the final model's roles holds at every sibling checkpoint, with the
held-out bits/char and the in-context-learning score of each checkpoint.

Each checkpoint's point is an independent task (`points.py`), cached by checkpoint × text × settings × code, run in
local worker processes (`--workers`) or on a dask cluster (`--scheduler`, `cluster.py`); this module plans the
tasks, runs those the cache does not hold, and assembles each model's `Timeline` (with the rules of `phases.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from .device import device_of
from .evidence import Series, Timeline
from .layouts import series as checkpoint_series
from .phases import RULE, leaves_chance, phase_changes, significant_from
from .points import PointTask, icl_positions, job, read, shape, write
from .points import recorded_loss  # noqa: F401 - re-exported (tests/test_layouts.py)
from .taskcache import code_version, task_key, text_digest

if TYPE_CHECKING:
    from .config import RunConfig
    from .stages import ModelAnalysis, Prepared

RETRIES = 2  # a local worker that dies has its tasks run again this many times


@dataclass(frozen=True)
class Plan:
    """One model's timeline: its checkpoints' tasks (in step order), the held-out text and the series to draw."""

    label: str
    tasks: list[PointTask]
    ids: np.ndarray
    classes: object
    shape: str  # the analysed checkpoint's hyperparameters and vocabulary: other shapes are left out
    series: list[tuple[str, int, int, str]]  # (detector, layer, head, label)


def point_tasks(prep: Prepared, cfg: RunConfig, code: str) -> list[PointTask] | None:
    """The tasks of a model's timeline, when its folder holds three or more checkpoints of one run (reportgen
    `stepN.pt`, the course's `checkpoint_step{S}_loss{L}.pt`, nanoGPT's `ckpt_iter{N}.pt`, step folders); None
    otherwise. They need no roles: a run starts them beside its models' capture (`early_jobs`)."""
    path = prep.bundle.path
    siblings = checkpoint_series(path)
    if len(siblings) < 3 or path not in siblings:
        return None
    ids, classes = prep.ids["heldout"], prep.classes
    device = str(device_of(prep.bundle.model))
    settings = {"windows": cfg.timeline_windows, "seed": cfg.seed, "device": device.split(":")[0],
                "residuals": prep.bundle.config.with_residuals, "hypotheses": [vars(h) for h in cfg.hypotheses],
                "train_text": prep.spec.train_text, "meta": prep.spec.meta}
    text = text_digest(ids, classes)
    return [PointTask(ckpt.resolve(), task_key(ckpt, text, settings, code), prep.bundle.config.with_residuals,
                      prep.spec.train_text, prep.spec.meta, device, cfg.timeline_windows, cfg.seed, cfg.hypotheses)
            for ckpt in siblings]


def plan(a: ModelAnalysis, cfg: RunConfig, code: str) -> Plan | None:
    """A model's timeline: its point tasks (`point_tasks`; None when it has none) and the series to draw: the
    strongest replicated role of each family, plus the strongest natural-text induction head."""
    prep = a.prep
    tasks = point_tasks(prep, cfg, code)
    if tasks is None:
        return None
    chosen = {}
    for f in a.findings:  # strongest replicated finding per family, plus the natural-text induction score
        if f.replicated and f.family not in chosen and not f.pattern.startswith("probe_"):
            chosen[f.family] = f
    series = [(f.pattern, f.layer, f.head, f"L{f.layer}H{f.head} {f.role}") for f in chosen.values()]
    if not any(p == "induction" for p, *_ in series):
        ind = a.stats["heldout"].values["induction"]["mean"]
        l, h = np.unravel_index(np.nanargmax(ind), ind.shape)
        role = next((f.role for f in a.findings if f.replicated and f.primary and (f.layer, f.head) == (l, h)), None)
        series.append(("induction", int(l), int(h), f"L{l}H{h} natural-text induction attention (strongest at the "
                       f"final step{f'; its role there: {role}' if role else ''})"))
    return Plan(prep.spec.label, tasks, prep.ids["heldout"], prep.classes, shape(prep.bundle), series)


def compute_points(plans: list[Plan], cfg: RunConfig, progress,
                   known: dict[str, dict[str, np.ndarray]] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Every point of `plans` by cache key: `known` ones (computed earlier in this run), then those the cache holds,
    the others computed (local workers, or the dask cluster at `cfg.scheduler`) and stored as they arrive."""
    from .workers import count, run_jobs

    todo = pending([(p.ids, p.classes, p.tasks) for p in plans], cfg, progress, known)
    if not todo.tasks:
        return todo.points
    if cfg.scheduler:
        from .cluster import run_on_cluster

        batches: dict[int, tuple] = {}  # the tasks of each held-out text together: the text travels once
        for ids, classes, t in todo.tasks:
            batches.setdefault(id(ids), (ids, classes, []))[2].append(t)
        run_on_cluster(cfg.scheduler, list(batches.values()), todo.store)
    else:
        import torch

        run_jobs(todo.jobs(), progress, count(torch.device(todo.tasks[0][2].device), len(todo.tasks), cfg.workers),
                 RETRIES, on_done=todo.done)
    return todo.points


def assemble(p: Plan, points: dict[str, dict[str, np.ndarray]]) -> Timeline | None:
    """A model's Timeline from its points (checkpoints of another shape left out), with each series' chance, the
    step from which it stays significant, and the phase changes (`phases.py`); None below three checkpoints."""
    got = [points[t.key] for t in p.tasks if str(points[t.key]["shape"]) == p.shape]
    if len(got) < 3:
        return None
    num = lambda x: None if not math.isfinite(float(x)) else float(x)
    steps = [None if num(q["step"]) is None else int(q["step"]) for q in got]
    series = []
    for det, l, h, label in p.series:
        v = {k: [float(q[f"{det}/{k}"][l, h]) for q in got] for k in ("mean", "ci_low", "ci_high")}
        chance = num(got[-1][f"{det}/chance"][l, h])
        # as the role itself: above uniform chance and, where the detector has them, above its other nulls (the
        # lower bound of the excess over the strictest of them, window by window)
        margin = [c - float(q[f"{det}/chance"][l, h]) for c, q in zip(v["ci_low"], got)]
        if all(f"{det}/gain_ci_low" in q for q in got):
            margin = [min(m, float(q[f"{det}/gain_ci_low"][l, h])) for m, q in zip(margin, got)]
        first = significant_from(steps, margin, 0.0)
        series.append(Series(label, det, l, h, chance, **v, significant_from=first,
                             leaves_chance=leaves_chance(v["ci_low"], chance)))
    recorded = [num(q["recorded_bits_per_char"]) for q in got]
    kinds = sorted({str(q["recorded"]) for q in got} - {""})
    icl = {k: [float(q[k]) for q in got] for k in ("icl", "icl_ci_low", "icl_ci_high")}
    T = len(got[-1]["loss_by_position"]) + 1
    late, early = icl_positions(T)
    more = {k: [float(q[k]) for q in got] for k in ("copying", "copying_ci_low", "copying_ci_high")} \
        if all("copying" in q for q in got) else {}
    changes = phase_changes(steps, icl["icl"], icl["icl_ci_low"], icl["icl_ci_high"], series)
    if more:
        changes += phase_changes(steps, more["copying"], more["copying_ci_low"], more["copying_ci_high"], series,
                                 "copying score")
        more["copying_period"] = int(got[-1]["copying_period"])
        more["copying_from"] = significant_from(steps, [-x for x in more["copying_ci_high"]], 0.0)
    more["icl_from"] = significant_from(steps, [-x for x in icl["icl_ci_high"]], 0.0)  # upper bound below 0
    return Timeline(steps, [num(q["heldout_bits_per_char"]) for q in got], int(got[-1]["n_windows"]), series,
                    recorded if kinds else None, " / ".join(kinds) if kinds else None,
                    bits_per_char=[float(q["bits_per_char"]) for q in got], **icl,
                    icl_late=[late[0], late[-1]], icl_early=[early[0], early[-1]], **more,
                    phase_changes=sorted(changes, key=lambda c: steps.index(c.step)),
                    phase_rule=RULE)


@dataclass
class Pending:
    """Timeline points by cache key (given, read from the cache, and stored by `done` as their jobs finish) and the
    tasks still to compute, each as (held-out ids, classes, task)."""

    points: dict[str, dict[str, np.ndarray]]
    tasks: list[tuple[np.ndarray, object, PointTask]]
    progress: object
    bar: object = None

    def jobs(self) -> list:
        """The tasks as `workers.run_jobs` jobs."""
        return [partial(job, t, ids, classes) for ids, classes, t in self.tasks]

    def done(self, j: int, point: dict[str, np.ndarray]) -> None:
        """Job `j` finished."""
        self.store(self.tasks[j][2], point)

    def store(self, task: PointTask, point: dict[str, np.ndarray]) -> None:
        """A task's point arrived: into the cache and here."""
        write(task.key, point)
        self.points[task.key] = point
        self.progress.advance(self.bar)


def pending(groups: list[tuple[np.ndarray, object, list[PointTask]]], cfg: RunConfig, progress,
            known: dict[str, dict[str, np.ndarray]] | None = None) -> Pending:
    """The points of `groups` (held-out ids, classes, tasks): `known` ones, those the cache holds, and the tasks
    still to compute (each key once), said in one line and given one progress bar."""
    from .progress import say

    out = Pending(dict(known or {}), [], progress)
    n = 0
    for ids, classes, tasks in groups:
        for t in tasks:
            n += 1
            if t.key in out.points or any(t.key == u.key for *_, u in out.tasks):
                continue
            got = read(t.key)
            if got is not None:
                out.points[t.key] = got
            else:
                out.tasks.append((ids, classes, t))
    if n and (known is None or out.tasks):
        where = f"on the dask cluster at {cfg.scheduler}" if cfg.scheduler else "here"
        say(f"timeline: {n - len(out.tasks)} of {n} checkpoint point(s) from the cache, {len(out.tasks)} to compute "
            f"{where}")
    if out.tasks:  # from the first job to the last (not work: see `points.job`)
        out.bar = progress.add_task(f"timeline: checkpoint points ({len(out.tasks)})", total=len(out.tasks), span=True)
    return out


def early_jobs(prepared: list[Prepared], cfg: RunConfig, progress) -> Pending | None:
    """The timeline points not in the cache, as jobs for the run's first worker pool (they need no roles, and small
    jobs after the models' fill its idle workers); None when there is no timeline, or the points go to a dask
    cluster (`compute_points` sends them there after the roles)."""
    if not cfg.timeline_windows or cfg.scheduler:
        return None
    code = code_version("points")
    return pending([(p.ids["heldout"], p.classes, point_tasks(p, cfg, code) or []) for p in prepared], cfg, progress)


def timelines(analyses: list[ModelAnalysis], cfg: RunConfig, progress,
              early: Pending | None = None) -> list[Timeline | None]:
    """Each model's emergence timeline (None where its folder is no series, or `timeline_windows` is 0), from the
    points `early` computed and those still to compute."""
    if not cfg.timeline_windows:
        return [None] * len(analyses)
    code = code_version("points")
    plans = [plan(a, cfg, code) for a in analyses]
    points = compute_points([p for p in plans if p], cfg, progress, early.points if early else None)
    return [assemble(p, points) if p else None for p in plans]
