"""Timeline points: one checkpoint's held-out statistics, bits/char and in-context-learning score, computed as an
independent task and cached by checkpoint × text × settings × code.

A point is a pure function of its inputs (`compute`): the checkpoint (its bytes, and the vocabulary and
hyperparameters the loader read beside it), the held-out token ids and character classes, the settings that change
numbers (windows, seed, hypotheses, device type) and the analysis code. Its cache key hashes all of these, so a
re-run, a run with more checkpoints of the same series, or another run over overlapping checkpoints reuses every
point it has already computed (the key recipe is `taskcache.task_key`). Workers only compute; this process stores
each point as it arrives in the cache's `timeline/<key>.npz` (`taskcache.store`: a temporary file renamed into
place), so a task or worker killed mid-way leaves no entry, and the next run computes it again.
Tasks run in forked local workers (`workers.run_jobs`: the tasks of a worker that dies run again) or, with
`--scheduler ADDRESS`, on a dask.distributed cluster (`cluster.py`); the numbers are the same.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import taskcache

FIELDS = ("mean", "chance", "ci_low", "ci_high", "gain_ci_low")  # gain: the excess over the strictest null (where
# a detector has positional, label-swap or word-structure nulls), window by window
ICL_LATE = 3 / 4  # the in-context-learning score: mean loss at positions >= 3/4 T ...
ICL_EARLY = (1 / 16, 3 / 16)  # ... minus mean loss at positions in [T/16, 3T/16) (around T/8)


@dataclass(frozen=True)
class PointTask:
    """What one timeline point depends on, besides the held-out ids and classes it is given with."""

    path: Path  # the checkpoint (read by the worker: a cluster's workers must see the same path)
    key: str  # cache key (`taskcache.task_key`)
    with_residuals: bool
    train_text: Path | None
    meta: Path | None
    device: str
    windows: int  # held-out windows (evenly spread, as `capture` picks them)
    seed: int
    hypotheses: tuple = ()


def icl_positions(T: int) -> tuple[range, range]:
    """(late, early) query positions of the in-context-learning score for context length T: the loss of predicting
    character p + 1 from the p + 1 characters up to p, for p in each range (the last position has no target inside
    the window, so p runs to T - 2)."""
    return range(math.ceil(ICL_LATE * T), T - 1), range(round(ICL_EARLY[0] * T), round(ICL_EARLY[1] * T))


RECORDED = {"course": ("train_loss", "training loss"), "nanogpt": ("best_val_loss", "validation loss (best so far)")}


def recorded_loss(meta: dict) -> tuple[float | None, str | None]:
    """(bits/char, what it is) of the loss a course or nanoGPT checkpoint recorded in training (nats per character,
    as cross-entropy is), else (None, None)."""
    key, what = RECORDED.get(meta.get("format"), (None, None))
    value = meta.get(key) if key else None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        return None, None
    return float(value) / math.log(2), what


def shape(bundle) -> str:
    """What must match between the points of one timeline: the hyperparameters and the vocabulary."""
    return json.dumps([bundle.config.to_dict(), list(bundle.tokenizer.vocab)], sort_keys=True)


def compute(task: PointTask, ids: np.ndarray, classes) -> dict[str, np.ndarray]:
    """The point: per detector `<name>/mean|chance|ci_low|ci_high` (L, H) on `task.windows` held-out windows, and
    on the same windows the bits/char, the in-context-learning score (late minus early loss, bits/char) with its CI,
    and the loss by position; the copying score on repeated held-out passages (`copying`); the step and losses the checkpoint recorded (NaN where none); `shape` (its
    hyperparameters and vocabulary)."""
    import torch

    from .capture import capture
    from .catalogue import set_hypotheses
    from .checkpoint import load_checkpoint
    from .stats import block_resample_counts, bootstrap_ci, split_stats

    set_hypotheses(task.hypotheses)  # a cluster worker did not inherit the run's
    bundle = load_checkpoint(task.path, with_residuals=task.with_residuals, train_text=task.train_text,
                             meta_path=task.meta, device=torch.device(task.device))
    losses: list[np.ndarray] = []  # the loss from the capture's own forward passes, window by window
    scores = capture(bundle, ids, classes, limit=task.windows, n_samples=0, hypotheses=task.hypotheses, losses=losses)
    rng = np.random.default_rng([task.seed, 21])
    out = {f"{name}/{k}": np.asarray(v[k], dtype=np.float64)
           for name, v in split_stats(scores, {}, rng).values.items() for k in FIELDS if k in v}
    T = bundle.config.max_context_len
    bits = np.concatenate(losses)  # (W, T - 1)
    late, early = icl_positions(T)
    icl = bits[:, late].mean(1) - bits[:, early].mean(1)  # (W,)
    low, high, _ = bootstrap_ci(icl[:, None], block_resample_counts(len(icl), np.random.default_rng([task.seed, 22]), 1))
    copy = copying(bundle, ids, task.windows, T, scores.mean_attn, np.random.default_rng([task.seed, 23]))
    recorded, what = recorded_loss(bundle.metadata)
    meta = bundle.metadata
    number = lambda v: float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan
    out.update({"bits_per_char": bits.mean(), "icl": icl.mean(), "icl_ci_low": low[0], "icl_ci_high": high[0], **copy,
                "loss_by_position": bits.mean(0), "n_windows": float(len(bits)), "step": number(meta.get("step")),
                "heldout_bits_per_char": number(meta.get("heldout_bits_per_char")),
                "recorded_bits_per_char": number(recorded)})
    return {**{k: np.asarray(v, dtype=np.float64) for k, v in out.items()}, "shape": np.asarray(shape(bundle)),
            "recorded": np.asarray(what or "")}


def copying(bundle, ids: np.ndarray, n: int, T: int, mean_attn: np.ndarray,
            rng: np.random.Generator) -> dict[str, float]:
    """The copying score on `n` held-out passages of T // 2 characters, each repeated twice (`capture.probe` on
    `natural_probes`, as the run's copying probe): mean loss on the second copy minus the first, bits/char, with its
    95% bootstrap CI over passages (below 0: the model predicts a passage better once it has seen it), and the
    passage length."""
    from .capture import natural_probes, probe
    from .stats import bootstrap_ci

    seqs, period = natural_probes(ids, n, T)
    p = probe(bundle, seqs, period, "natural", mean_attn)
    gain = (p.loss_repeat - p.loss_first).astype(np.float64)  # (P,) predicting the second copy vs the first
    low, high, _ = bootstrap_ci(gain[:, None], rng)
    return {"copying": float(gain.mean()), "copying_ci_low": float(low[0]), "copying_ci_high": float(high[0]),
            "copying_period": float(period)}


def read(key: str) -> dict[str, np.ndarray] | None:
    """A cached point, or None (absent, or unreadable: computed again)."""
    return taskcache.read("timeline", key, _load)


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def write(key: str, point: dict[str, np.ndarray]) -> None:
    """Store a point in the cache, atomically (`taskcache.store`: a read-only or full cache only costs time)."""

    def save(tmp: Path) -> None:
        with tmp.open("wb") as fh:
            np.savez(fh, **point)

    taskcache.store("timeline", key, save)


def job(task: PointTask, ids: np.ndarray, classes, progress=None) -> dict[str, np.ndarray]:
    """`compute` as a `workers.run_jobs` job; with a progress object, timed as a hidden task (its stage time, in
    `progress.stage_seconds`, is then the work of the points, whatever else shares their pool)."""
    if progress is None:
        return compute(task, ids, classes)
    timed = progress.add_task("timeline: checkpoint point", total=1, visible=False)
    point = compute(task, ids, classes)
    progress.advance(timed)
    return point
