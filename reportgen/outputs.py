"""The output folder: what reportgen writes there, its inventory, and the staged swap into place.

Files: results.json (the typed `Run`), windows.npz (held-out per-window values for paired
diffs), .figure-inputs.npz (arrays figures need beyond results.json), figures/, the HTML pages,
style.css, report.pdf, timings.json, and the status file, which records the cache keys and the
inventory: every file the run wrote. `complete()` says whether every inventoried file is still
there; `clean()` removes exactly those files and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import ReportgenError
from .results import Run, dumps, read_run
from .stages import FigureInputs

RESULTS = "results.json"
WINDOWS = "windows.npz"
FIGURE_INPUTS = ".figure-inputs.npz"
STATUS = ".reportgen-status.json"
TIMINGS = "timings.json"
FIGURES = "figures"
KEEP = ("README.md", "diff")  # written by people or by `reportgen diff`: carried over to a new output


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file atomically (temporary sibling, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_json(path: Path, document: dict) -> None:
    """Write a JSON document atomically."""
    write_text_atomic(path, dumps(document))


class OutputFolder:
    """One output folder (or its staging twin) and the files reportgen keeps in it."""

    def __init__(self, path: Path):
        self.path = Path(path)

    # ---- status and inventory -------------------------------------------------------------------
    def status(self) -> dict:
        """The status file's content, or {} if there is none or it is unreadable."""
        try:
            doc = json.loads((self.path / STATUS).read_text())
            return doc if isinstance(doc, dict) else {}
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            return {}

    def inventory(self) -> list[str]:
        """Relative paths of every file the last run wrote here."""
        return list(self.status().get("files", []))

    def complete(self, wanted: list[str] = ()) -> bool:
        """Whether a status file exists and every inventoried (and every `wanted`) file is present."""
        files = self.inventory()
        return bool(files) and all((self.path / f).is_file() for f in [*files, *wanted])

    def record(self, **status) -> None:
        """Write the status file: the given keys plus the inventory of every file now in the folder."""
        files = sorted(str(p.relative_to(self.path)) for p in self.path.rglob("*")
                       if p.is_file() and p.name != STATUS and p.parts[len(self.path.parts)] not in KEEP)
        write_json(self.path / STATUS, {**status, "files": files})

    def clean(self) -> list[Path]:
        """Remove the files the inventory lists (then empty folders they leave and the status file)."""
        removed = []
        for rel in self.inventory():
            p = self.path / rel
            if p.is_file():
                p.unlink()
                removed.append(p)
        figures = self.path / FIGURES
        if figures.is_dir() and not any(figures.iterdir()):
            figures.rmdir()
        if (self.path / STATUS).exists():
            (self.path / STATUS).unlink()
            removed.append(self.path / STATUS)
        return removed

    # ---- results and arrays ---------------------------------------------------------------------
    def write_run(self, run: Run) -> None:
        write_json(self.path / RESULTS, run.to_json())

    def read_run(self) -> Run:
        return read_run(self.path / RESULTS)

    def write_windows(self, windows: dict[str, dict[str, np.ndarray]]) -> None:
        """Per-window held-out values (float32; window starts as integers) for paired diffs later."""
        arrays = {f"{label}\x1f{name}": (v if name == "__starts__" else v.astype(np.float32))
                  for label, values in windows.items() for name, v in values.items()}
        with (self.path / WINDOWS).open("wb") as fh:
            np.savez_compressed(fh, **arrays)

    def read_windows(self) -> dict[str, dict[str, np.ndarray]]:
        """Inverse of write_windows; {} if the file is missing."""
        path = self.path / WINDOWS
        if not path.exists():
            return {}
        out: dict[str, dict[str, np.ndarray]] = {}
        try:
            with np.load(path, allow_pickle=False) as data:
                for key in data.files:
                    label, name = key.split("\x1f", 1)
                    out.setdefault(label, {})[name] = data[key]
        except (ValueError, OSError) as exc:
            raise ReportgenError(f"{path}: not a readable per-window file ({exc})") from None
        return out

    def write_figure_inputs(self, items: list[FigureInputs]) -> None:
        """Figure inputs as plain arrays and strings in one .npz (nothing pickled)."""
        arrays: dict[str, np.ndarray] = {}
        for k, it in enumerate(items):
            p = f"m{k}_"
            arrays[p + "meta"] = np.array([it.label, it.language])
            arrays[p + "captions"] = np.array([e[0] for e in it.examples])
            arrays[p + "texts"] = np.array([e[1] for e in it.examples])
            for j, e in enumerate(it.examples):
                arrays[f"{p}example{j}"] = e[2]
            for name in ("mean_attn", "class_matrix", "class_chance", "class_count"):
                arrays[p + name] = getattr(it, name)
        with (self.path / FIGURE_INPUTS).open("wb") as fh:
            np.savez_compressed(fh, **arrays)

    def read_figure_inputs(self) -> list[FigureInputs] | None:
        """Inverse of write_figure_inputs; None if missing or unreadable (the caller re-analyses)."""
        try:
            with np.load(self.path / FIGURE_INPUTS, allow_pickle=False) as data:
                items, k = [], 0
                while f"m{k}_meta" in data.files:
                    p = f"m{k}_"
                    label, language = (str(x) for x in data[p + "meta"])
                    examples = tuple((str(c), str(t), data[f"{p}example{j}"])
                                     for j, (c, t) in enumerate(zip(data[p + "captions"], data[p + "texts"])))
                    items.append(FigureInputs(label, language, examples, data[p + "mean_attn"],
                                              data[p + "class_matrix"], data[p + "class_chance"],
                                              data[p + "class_count"]))
                    k += 1
            return items or None
        except (OSError, ValueError, KeyError):
            return None

    # ---- staging --------------------------------------------------------------------------------
    @classmethod
    @contextlib.contextmanager
    def staged(cls, out: Path) -> Iterator["OutputFolder"]:
        """A fresh staging folder beside `out`; swapped into place only if the block completes."""
        staging = out.with_name(f".{out.name}.staging-{os.getpid()}")
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        try:
            yield cls(staging)
            _swap_into_place(staging, out)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def _swap_into_place(staging: Path, out: Path) -> None:
    """Replace `out` with the finished staging folder (old output removed only after success)."""
    old = out.with_name(f".{out.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        for p in out.iterdir():  # keep what other commands and people put there
            if p.name == "README.md":
                shutil.copy(p, staging / p.name)
            elif p.name == "diff" and p.is_dir() and not (staging / "diff").exists():
                shutil.copytree(p, staging / "diff")
        out.rename(old)
    staging.rename(out)
    if old.exists():
        shutil.rmtree(old)
