"""Training layouts: which file a model path means and which checkpoints form its training series.

No torch here (the cache key reads it before any heavy import). Layouts, each a series in numeric step order:

* reportgen: `stepN.pt` files in one folder;
* the course, flat: `checkpoint_step{S}_loss{L}.pt` files in one folder (props and tokenizer.json beside them);
* the course's main.py, nested: one folder per step (`checkpoints/english_step_500/`, `step_500/`, `step500/`)
  holding one checkpoint each, tokenizer.json and props in the step folder or in the folder above;
* nanoGPT: `ckpt_iter{N}.pt` (or `ckpt_iter_{N}.pt`) snapshots in one folder; a lone `ckpt.pt` has no series.

`seedN/` subfolders are seeds of one recipe (config.family), never training steps.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import ReportgenError

COURSE_NAME = re.compile(r"checkpoint_step(?P<step>\d+)_loss(?P<loss>[-+0-9.eE]+?)\.pt$")
REPORTGEN_NAME = re.compile(r"^step(?P<step>\d+)\.pt$")
NANOGPT_NAME = re.compile(r"^ckpt_iter_?(?P<step>\d+)\.pt$")
STEP_FOLDER = re.compile(r"^(?P<run>(?:.*[_-])?)step[_-]?(?P<step>\d+)$")  # english_step_500, step_500, step500
SEED_FOLDER = re.compile(r"seed\d+")
NAMES = ((COURSE_NAME, "checkpoint_step*_loss*.pt"), (REPORTGEN_NAME, "step*.pt"), (NANOGPT_NAME, "ckpt_iter*.pt"))


def step_folder(folder: Path) -> re.Match | None:
    """The match of a per-step folder's name (groups `run`, the name before the step, and `step`), else None."""
    return STEP_FOLDER.fullmatch(folder.name)


def step_of(path: Path) -> int | None:
    """The training step a checkpoint's file name (course, reportgen or nanoGPT naming) or, for a checkpoint in a
    per-step folder, that folder's name says; else None."""
    for pattern, _ in NAMES:
        match = pattern.search(path.name)
        if match:
            return int(match["step"])
    folder = step_folder(path.parent)
    return int(folder["step"]) if folder else None


def _by_step(paths) -> list[Path]:
    return sorted(paths, key=lambda p: (step_of(p), p.name))


def step_folders(folder: Path) -> dict[str, list[Path]]:
    """A folder's per-step subfolders holding a .pt file, by run name (the part before the step), each in numeric
    step order; `seedN/` folders are seeds, never steps."""
    runs: dict[str, list[Path]] = {}
    for p in folder.iterdir() if folder.is_dir() else ():
        match = step_folder(p)
        if p.is_dir() and match and not SEED_FOLDER.fullmatch(p.name) and any(p.glob("*.pt")):
            runs.setdefault(match["run"], []).append(p)
    return {run: sorted(found, key=lambda p: int(step_folder(p)["step"])) for run, found in runs.items()}


def resolve(path: Path) -> Path:
    """A checkpoint file, or the latest checkpoint a folder means: its highest-step file (by number), else its
    highest per-step subfolder's checkpoint, else its only / last .pt file (e.g. nanoGPT's ckpt.pt)."""
    if not path.is_dir():
        return path
    pts = [p for p in path.glob("*.pt") if p.is_file()]
    stepped = _by_step(p for p in pts if step_of(p) is not None)
    if stepped:
        return stepped[-1]
    runs = step_folders(path)
    if len(runs) > 1:
        names = ", ".join(f"{run}step_*" for run in sorted(runs))
        raise ReportgenError(f"{path}: holds the step folders of {len(runs)} runs ({names}); give one run's step "
                             f"folder, e.g. {next(iter(runs.values()))[-1]}")
    if runs:
        return resolve(next(iter(runs.values()))[-1])
    if not pts:
        raise ReportgenError(f"{path}: folder holds no .pt checkpoint")
    return sorted(pts)[-1]


def series(path: Path) -> list[Path]:
    """The checkpoints of one training run that `path` (a resolved checkpoint file) belongs to, in numeric step
    order: its same-named siblings (stepN.pt, checkpoint_step*, ckpt_iter*), or for a checkpoint in a per-step
    folder the checkpoint of every sibling step folder of the same run."""
    for pattern, glob in NAMES:
        if pattern.search(path.name):
            found = _by_step(p for p in path.parent.glob(glob) if p.is_file() and pattern.search(p.name))
            if len(found) > 1 or not step_folder(path.parent):
                return found
    here = step_folder(path.parent)
    if here is None:
        return []
    out = []
    for folder in step_folders(path.parent.parent).get(here["run"], []):
        try:
            out.append(path if folder == path.parent else resolve(folder))
        except ReportgenError:
            continue
    return out


def beside_or_above(ckpt: Path, name: str) -> Path | None:
    """`name` beside a checkpoint, else (for a checkpoint in a per-step or seed folder) in the folder above."""
    candidates = [ckpt.parent / name]
    if step_folder(ckpt.parent) or SEED_FOLDER.fullmatch(ckpt.parent.name):
        candidates.append(ckpt.parent.parent / name)
    return next((c for c in candidates if c.is_file()), None)


def props_file(ckpt: Path) -> Path | None:
    """A course checkpoint's hyperparameters: `checkpoint_step{S}_props.json`, else `props.json`, beside it or
    above its step folder."""
    step = step_of(ckpt)
    names = ([f"checkpoint_step{step}_props.json"] if step is not None else []) + ["props.json"]
    return next((found for n in names if (found := beside_or_above(ckpt, n)) is not None), None)


def run_files(path: Path) -> list[Path]:
    """Every file a model path's analysis reads from its layout (for the cache key): the series, and the tokenizer
    and props files of each checkpoint in it."""
    try:
        ckpt = resolve(path)
    except (ReportgenError, OSError):
        return []
    files = {ckpt, *series(ckpt)}
    for f in list(files):
        files.update(x for x in (beside_or_above(f, "tokenizer.json"), props_file(f)) if x is not None)
    return sorted(files)


def run_name(path: Path) -> str:
    """A model's default label: the run's folder name (for a checkpoint named by its layout, `ckpt.pt`,
    `step500.pt`, `checkpoint_step…`, or one inside a per-step or seed folder, the folder above those), else the
    file's own name (`my_model.pt` -> "my model")."""
    generic = path.suffix == ".pt" and (path.name == "ckpt.pt" or any(p.search(path.name) for p, _ in NAMES))
    if path.suffix == ".pt" and not generic and not step_folder(path.parent):
        return path.stem.replace("_", " ")
    folder = path.parent if path.suffix == ".pt" else path
    folder = Path(os.path.abspath(folder))  # ".." and "." resolved by name, links not followed
    while step_folder(folder) or SEED_FOLDER.fullmatch(folder.name):
        folder = folder.parent
    return folder.name or path.stem.replace("_", " ") or "model"
