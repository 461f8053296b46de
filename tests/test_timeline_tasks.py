"""The timeline's per-checkpoint tasks: cached by checkpoint × text × settings × code, computed by local workers or a
dask cluster with the same numbers, retried when a worker dies, never half-written; and the rules that mark when a
role forms and where a phase change is."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from reportgen import timeline as tl
from reportgen.checkpoint import save_checkpoint
from reportgen.classes import CharClasses
from reportgen.evidence import Series
from reportgen.phases import jumps, leaves_chance, phase_changes, significant_from
from reportgen.points import PointTask, read, shape, write
from reportgen.taskcache import code_version, entry, task_key, text_digest

from .conftest import TINY_TEXT

WINDOWS = 6


@pytest.fixture
def series_plan(tmp_path, tiny_model, tokenizer, monkeypatch):
    """Three checkpoints of one tiny run and the plan of their timeline points (the cache in tmp_path/cache)."""
    monkeypatch.setenv("REPORTGEN_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "run"
    for step in (10, 100, 1000):
        with torch.no_grad():
            for p in tiny_model.parameters():
                p.mul_(1.05)
        save_checkpoint(folder / f"step{step:05d}.pt", tiny_model, tokenizer, step=step, train_loss=3.0,
                        heldout_bits_per_char=3.0 - step / 1000, corpus={"name": "tiny", "language": "en"}, seed=0,
                        history=[], dtype=torch.float32)
    ids = np.asarray(tokenizer.tokenize(TINY_TEXT * 6))
    classes = CharClasses.for_vocab(tokenizer.vocab, "en")
    text, code = text_digest(ids, classes), code_version("points")
    settings = {"windows": WINDOWS, "seed": 0}
    tasks = [PointTask(p, task_key(p, text, settings, code), True, None, None, "cpu", WINDOWS, 0)
             for p in sorted(folder.glob("*.pt"))]
    from reportgen.checkpoint import load_checkpoint

    return tl.Plan("Tiny", tasks, ids, classes, shape(load_checkpoint(tasks[-1].path)),
                   [("offset_1", 0, 0, "L0H0 previous"), ("induction", 1, 2, "L1H2 induction")])


@pytest.fixture
def progress():
    from reportgen.progress import make_progress

    with make_progress() as p:
        yield p


def _cfg(**kw):
    return SimpleNamespace(**{"scheduler": None, "workers": 2, **kw})


def _same(a: dict, b: dict) -> bool:
    """Two points hold the same fields with identical values (NaN equal to NaN)."""
    return set(a) == set(b) and all(np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f") for k in a)


def _cache_files(tmp_path: Path) -> list[str]:
    folder = tmp_path / "cache" / "timeline"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_points_are_cached_by_key_and_a_new_checkpoint_is_the_only_one_computed(series_plan, tmp_path, progress):
    points = tl.compute_points([series_plan], _cfg(workers=1), progress)
    assert set(points) == {t.key for t in series_plan.tasks}
    assert _cache_files(tmp_path) == sorted(entry("timeline", t.key).name for t in series_plan.tasks)
    timeline = tl.assemble(series_plan, points)
    assert timeline.steps == [10, 100, 1000] and timeline.heldout_bits_per_char == [2.99, 2.9, 2.0]
    assert timeline.windows == WINDOWS and len(timeline.icl) == 3
    assert timeline.icl_late == [24, 30] and timeline.icl_early == [2, 5]  # T = 32: positions 24..30 and 2..5
    for s in timeline.series:
        assert 0 < s.chance < 1 and all(lo <= m <= hi for lo, m, hi in zip(s.ci_low, s.mean, s.ci_high))
    # the key follows the checkpoint's bytes: rewriting one checkpoint changes its key and no other
    changed = tmp_path / "run" / "step00100.pt"
    changed.write_bytes(changed.read_bytes() + b"\0")
    keys = [task_key(t.path, "t", {}, "c") for t in series_plan.tasks]
    changed.write_bytes(changed.read_bytes()[:-1])
    assert [task_key(t.path, "t", {}, "c") for t in series_plan.tasks] != keys
    assert [task_key(t.path, "t", {}, "c") for t in series_plan.tasks][0] == keys[0]
    # a second pass computes nothing: every point is read back, equal to what was computed
    computed = []
    original = tl.job
    tl.job = lambda task, *a: computed.append(task) or original(task, *a)
    try:
        again = tl.compute_points([series_plan], _cfg(workers=1), progress)
    finally:
        tl.job = original
    assert computed == []
    for key, point in points.items():
        assert _same(point, again[key])


def _dies_once(marker: Path, real):
    parent = os.getpid()

    def job(task, *args):
        if task.path.name == "step00100.pt" and not marker.exists():
            if os.getpid() == parent:  # run in turn in the test's own process: never kill pytest
                raise RuntimeError("the job ran in the test process, not in a forked worker")
            marker.write_text("died")
            os._exit(9)  # a worker killed mid-task: no exception, no result
        return real(task, *args)
    return job


def test_a_killed_worker_leaves_nothing_half_written_and_its_task_runs_again(series_plan, tmp_path, progress,
                                                                             monkeypatch):
    monkeypatch.setattr(tl, "job", _dies_once(tmp_path / "died", tl.job))
    # the workers asked for, whatever torch's thread count in this test process (an earlier test may set it to 1)
    monkeypatch.setattr("reportgen.workers.count", lambda device, jobs, limit=None: max(1, min(jobs, limit or 1)))
    points = tl.compute_points([series_plan], _cfg(workers=2), progress)
    assert (tmp_path / "died").exists()  # the worker did die once ...
    assert set(points) == {t.key for t in series_plan.tasks}  # ... and its task ran again
    assert len(_cache_files(tmp_path)) == 3 and all(n.endswith(".npz") for n in _cache_files(tmp_path))
    expected = tl.compute_points([series_plan], _cfg(workers=1), progress)
    assert all(_same(points[k], expected[k]) for k in points)
    # a write killed half-way (the process dies inside np.savez) leaves no entry, and the point is computed again
    key = series_plan.tasks[0].key
    entry("timeline", key).unlink()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child dies mid-write
        monkeypatch.setattr(np, "savez", lambda fh, **kw: (fh.write(b"PK\x03\x04 half"), fh.flush(), os._exit(9)))
        write(key, points[key])
        os._exit(0)
    os.waitpid(pid, 0)
    assert read(key) is None
    assert not entry("timeline", key).exists()
    redone = tl.compute_points([series_plan], _cfg(workers=1), progress)
    assert _same(redone[key], points[key]), [k for k in points[key] if not np.array_equal(redone[key][k], points[key][k], equal_nan=points[key][k].dtype.kind == "f")]


def test_a_worker_that_keeps_dying_is_an_error_not_a_hang(progress, tmp_path):
    from functools import partial

    from reportgen.errors import ReportgenError
    from reportgen.workers import run_jobs

    def job(k, progress):
        if k == 1:
            os._exit(9)
        return k

    with pytest.raises(ReportgenError, match="worker process died"):
        run_jobs([partial(job, k) for k in range(3)], progress, 2, retries=1)


def test_a_dask_cluster_gives_the_points_the_local_workers_give(series_plan, tmp_path, progress, monkeypatch):
    distributed = pytest.importorskip("distributed")
    local = tl.compute_points([series_plan], _cfg(workers=2), progress)
    monkeypatch.setenv("REPORTGEN_CACHE", str(tmp_path / "dask-cache"))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as c:
        remote = tl.compute_points([series_plan], _cfg(scheduler=c.scheduler_address), progress)
    assert set(remote) == set(local)
    for key in local:
        assert _same(local[key], remote[key]), key
    assert len(list((tmp_path / "dask-cache" / "timeline").glob("*.npz"))) == 3  # gathered into the cache


def test_significant_from_and_never_leaving_chance():
    steps = [1, 2, 3, 4, 5]
    assert significant_from(steps, [0.1, 0.3, 0.1, 0.3, 0.4], 0.2) == 4  # above at 2, back at chance at 3
    assert significant_from(steps, [0.3] * 5, 0.2) == 1
    assert significant_from(steps, [0.3, 0.3, 0.3, 0.3, 0.1], 0.2) is None  # not at the last step
    assert significant_from(steps, [0.3, float("nan"), 0.3, 0.3, 0.3], 0.2) == 3
    assert leaves_chance([0.1, 0.3, 0.1], 0.2) and not leaves_chance([0.039, 0.041, 0.046], 0.05)


def test_a_phase_change_needs_the_icl_score_and_a_role_to_jump_together():
    steps = [100, 200, 300, 400, 500]
    mean = [0.1, 0.12, 0.6, 0.62, 0.63]
    role = Series("L1H0 induction", "induction", 1, 0, 0.05, mean, [m - 0.02 for m in mean], [m + 0.02 for m in mean],
                  leaves_chance=True)
    flat = Series("L0H0 flat", "offset_1", 0, 0, 0.05, [0.3] * 5, [0.28] * 5, [0.32] * 5, leaves_chance=True)
    assert jumps(mean, role.ci_low, role.ci_high) == [False, False, True, False, False]
    icl = [-0.1, -0.12, -0.5, -0.52, -0.53]
    low, high = [x - 0.03 for x in icl], [x + 0.03 for x in icl]
    (pc,) = phase_changes(steps, icl, low, high, [role, flat])
    assert (pc.step_before, pc.step, pc.roles) == (200, 300, ["L1H0 induction"])
    assert pc.icl_drop == pytest.approx(0.38)
    late = [-0.1, -0.12, -0.14, -0.5, -0.52]  # the ICL score falls one interval later: no phase change
    assert phase_changes(steps, late, [x - 0.03 for x in late], [x + 0.03 for x in late], [role, flat]) == []
    wide = [x - 0.5 for x in icl]  # the same fall inside overlapping CIs is no jump
    assert phase_changes(steps, icl, wide, [x + 0.5 for x in icl], [role]) == []
    hidden = Series(**{**role.__dict__, "leaves_chance": False})  # a role at chance is never part of one
    assert phase_changes(steps, icl, low, high, [hidden]) == []
    worse = [x + 0.6 for x in icl]  # the same fall from "late is worse" to still worse late: not learning in context
    assert phase_changes(steps, worse, [x - 0.03 for x in worse], [x + 0.03 for x in worse], [role, flat]) == []
    (pc,) = phase_changes(steps, icl, low, high, [role], "copying score")  # each score is named
    assert pc.score == "copying score"


@pytest.mark.slow
def test_a_dask_worker_killed_mid_run_has_its_tasks_run_again(series_plan, tmp_path, progress):
    """A worker process of a real (process-based) LocalCluster is killed after the first point arrives: the scheduler
    runs its tasks on the restarted worker, every point arrives once and equals the local path's."""
    distributed = pytest.importorskip("distributed")
    import signal

    from reportgen.cluster import run_on_cluster

    local = tl.compute_points([series_plan], _cfg(workers=1), progress)
    tasks = series_plan.tasks * 1  # the three checkpoints, twice over under other keys: more work in flight
    tasks = tasks + [t.__class__(**{**t.__dict__, "key": "x" + t.key}) for t in tasks]
    got, killed = {}, []
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        with distributed.Client(c.scheduler_address) as client:
            pids = list(client.run(os.getpid).values())

        def done(task, point):
            if not killed:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            assert task.key not in got
            got[task.key] = point

        run_on_cluster(c.scheduler_address, [(series_plan.ids, series_plan.classes, tasks)], done)
    assert killed and set(got) == {t.key for t in tasks}
    for t in series_plan.tasks:
        assert _same(got[t.key], local[t.key]) and _same(got["x" + t.key], local[t.key])


def test_a_series_is_significant_where_it_clears_its_strictest_null_not_only_chance():
    """Above uniform chance at every step, but above its word-structure null only from the last two: significant from
    there (as the role itself is judged); a detector with chance as its only null is judged against chance."""
    T, W = 16, 8
    tasks = [PointTask(Path(f"step{s}.pt"), f"key{s}", True, None, None, "cpu", W, 0) for s in (100, 200, 300)]

    def point(k: int, step: int) -> dict:
        one = lambda v: np.full((1, 1), v)  # noqa: E731 - one layer, one head
        return {"shape": np.asarray("s"), "step": np.asarray(float(step)), "heldout_bits_per_char": np.asarray(3.0),
                "recorded_bits_per_char": np.asarray(np.nan), "recorded": np.asarray(""),
                "bits_per_char": np.asarray(3.0), "icl": np.asarray(0.0), "icl_ci_low": np.asarray(-0.1),
                "icl_ci_high": np.asarray(0.1), "loss_by_position": np.zeros(T - 1), "n_windows": np.asarray(float(W)),
                "class_vowel/mean": one(0.5), "class_vowel/chance": one(0.3), "class_vowel/ci_low": one(0.45),
                "class_vowel/ci_high": one(0.55), "class_vowel/gain_ci_low": one([-0.05, 0.01, 0.02][k]),
                "offset_1/mean": one(0.5), "offset_1/chance": one(0.1), "offset_1/ci_low": one(0.4),
                "offset_1/ci_high": one(0.6), "induction/mean": one(0.06), "induction/chance": one(0.05),
                "induction/ci_low": one([0.04, 0.045, 0.055][k]), "induction/ci_high": one(0.08),
                "induction/gain_ci_low": one(0.01)}  # above its positional null throughout, above chance at 300

    points = {t.key: point(k, s) for k, (t, s) in enumerate(zip(tasks, (100, 200, 300)))}
    plan = tl.Plan("X", tasks, np.zeros(64, dtype=int), None, "s",
                   [("class_vowel", 0, 0, "L0H0 vowel"), ("offset_1", 0, 0, "L0H0 previous"),
                    ("induction", 0, 0, "L0H0 induction")])
    vowel, previous, induction = tl.assemble(plan, points).series
    assert vowel.significant_from == 200 and vowel.leaves_chance  # not 100, where it is above chance only
    assert previous.significant_from == 100
    assert induction.significant_from == 300  # uniform chance is one of its nulls too
