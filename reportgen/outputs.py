"""The output folder: what reportgen writes there, its inventory, and how a new output replaces an old one.

Files: results.json (the typed `Run`), windows.npz (held-out per-window values for paired
diffs), figures/, the HTML pages and the explorer's model scripts, style.css, report.pdf,
timings.json, and, in the hidden subfolder .reportgen/ (a cache, never to be published), the
figure inputs (arrays figures need beyond results.json) and the status file, which records the
cache keys and the inventory: every file the run wrote, with its sha256. `complete()` says whether every inventoried
file is still there unchanged; `clean()` removes exactly those files and nothing else.

Safety: `--out` must be new, empty, or a previous reportgen output (it has a status file); any
other folder is refused before work starts, so a user's files are never deleted. A new output is
built in a staging folder beside `out`, then installed file by file with atomic renames (new
figures first, pages next, obsolete files of the old output last, the status file at the very end),
so at every instant `out/` holds complete pages whose links resolve and user files beside them are
never touched. An install journal lets the run after a crash finish the job. A lock beside `out`
keeps two runs apart; staging folders of dead runs are removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from .config import file_sha256
from .errors import ReportgenError
from .locks import lock, remove_dead, remove_dead_staging
from .results import Run, dumps, read_run
from .stages import FigureInputs

RESULTS = "results.json"
WINDOWS = "windows.npz"
CACHE = ".reportgen"  # reportgen's own files in an output folder: read back by the next run, never published
FIGURE_INPUTS = f"{CACHE}/figure-inputs.npz"
STATUS = f"{CACHE}/status.json"
TIMINGS = "timings.json"
FIGURES = "figures"
JOURNAL = f"{CACHE}/install.json"
# where reportgen before the cache subfolder kept them (top level): read, and removed when a new output replaces them
LEGACY_STATUS, LEGACY_FIGURE_INPUTS, LEGACY_JOURNAL = ".reportgen-status.json", ".figure-inputs.npz", ".reportgen-install.json"
KEEP = ("README.md", "diff", ".gitignore")  # may sit in an output folder without making it someone else's


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

    def __init__(self, path: Path, compress: bool = True):
        self.path = Path(path)
        self._savez = np.savez_compressed if compress else np.savez  # a private cache trades disk for ~0.3 s

    # ---- status and inventory -------------------------------------------------------------------
    def status(self) -> dict:
        """The status file's content, or {} if there is none or it is unreadable."""
        path = self.path / STATUS if (self.path / STATUS).exists() else self.path / LEGACY_STATUS
        try:
            doc = json.loads(path.read_text())
            return doc if isinstance(doc, dict) else {}
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            return {}

    def inventory(self) -> dict[str, str]:
        """Relative path -> sha256 of every file the last run wrote here (and, after an interrupted install,
        of every file that install may have put here)."""
        status = self.status()
        if status and "files" not in status:  # an output of an older reportgen: its files by name
            return {str(p.relative_to(self.path)): "" for p in sorted(self.path.rglob("*"))
                    if p.is_file() and p.name != LEGACY_STATUS and (p.parent == self.path / FIGURES or
                                                            (p.parent == self.path and _reportgen_name(p.name)))}
        files = status.get("files", {})
        files = dict(files) if isinstance(files, dict) else {f: "" for f in files if isinstance(f, str)}
        try:
            journal = json.loads((self.path / JOURNAL).read_text())
            listed = list(journal.get("old", [])) + list(journal.get("new", []))
            files.update({f: "" for f in listed if isinstance(f, str) and f not in files})
        except (OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError):
            pass
        return {f: h for f, h in files.items() if _inside(f)}

    def complete(self, wanted: list[str] = ()) -> bool:
        """Whether the status lists files, each is present with its recorded hash, and `wanted` files exist."""
        files = self.inventory()
        if not files or (self.path / JOURNAL).exists() or (self.path / LEGACY_JOURNAL).exists():
            return False
        ok = all((self.path / f).is_file() and (not h or file_sha256(self.path / f) == h) for f, h in files.items())
        return ok and all((self.path / f).is_file() for f in wanted)

    def record(self, **status) -> None:
        """Write the status file: the given keys plus the inventory (path -> sha256) of every file written."""
        files = {str(p.relative_to(self.path)): file_sha256(p) for p in sorted(self.path.rglob("*"))
                 if p.is_file() and p.relative_to(self.path).as_posix() != STATUS}
        write_json(self.path / STATUS, {**status, "files": files})

    def clean(self) -> list[Path]:
        """Remove the files the inventory lists (then empty folders they leave and the status file)."""
        removed = []
        for rel in self.inventory():
            p = self.path / rel
            if p.is_file():
                p.unlink()
                removed.append(p)
        _prune_empty(self.path / FIGURES)
        for name in (STATUS, JOURNAL, LEGACY_STATUS, LEGACY_JOURNAL):
            if (self.path / name).exists():
                (self.path / name).unlink()
                removed.append(self.path / name)
        _prune_empty(self.path / CACHE)
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
            self._savez(fh, **arrays)

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
        (self.path / CACHE).mkdir(exist_ok=True)
        with (self.path / FIGURE_INPUTS).open("wb") as fh:
            self._savez(fh, **arrays)

    def read_figure_inputs(self) -> list[FigureInputs] | None:
        """Inverse of write_figure_inputs; None if missing or unreadable (the caller re-analyses)."""
        path = self.path / FIGURE_INPUTS if (self.path / FIGURE_INPUTS).exists() else self.path / LEGACY_FIGURE_INPUTS
        try:
            with np.load(path, allow_pickle=False) as data:
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

    # ---- staging and installing -----------------------------------------------------------------
    @classmethod
    def check_target(cls, out: Path) -> None:
        """Refuse an `out` that is a file or a folder holding someone else's files, or one this machine cannot
        write (before any work): a name that is not a folder's (., ..), a dangling link, a name too long for
        the staging folder beside it, a parent that cannot be written."""
        if out.name in ("", ".", "..") or out.resolve() == Path.cwd().resolve():
            raise ReportgenError(f"{out}: --out must name a folder of its own (not . or ..), e.g. site")
        if out.is_symlink() and not out.exists():
            raise ReportgenError(f"{out}: a symbolic link to something that does not exist; choose another --out")
        _check_writable(out)
        if out.exists() and not out.is_dir():
            raise ReportgenError(f"{out}: exists and is not a folder; choose another --out")
        if not out.is_dir():
            return
        folder = cls(out)
        ours = set(folder.inventory())
        others = [p.name for p in sorted(out.iterdir()) if p.name not in KEEP
                  and p.name not in (LEGACY_STATUS, LEGACY_JOURNAL) and not (p.is_file() and p.name in ours)
                  and not (p.name in (FIGURES, CACHE) and p.is_dir())]
        if not ours and others:
            raise ReportgenError(f"{out}: folder holds files reportgen did not write (e.g. {others[0]}); "
                                 f"choose a new or empty --out")
        clashes = [n for n in others if _reportgen_name(n)]
        if clashes:
            raise ReportgenError(f"{out}: {clashes[0]} was not written by reportgen but a new output would replace "
                                 f"it; move it away or choose another --out")

    @classmethod
    @contextlib.contextmanager
    def locked(cls, out: Path) -> Iterator[None]:
        """Hold `out`'s lock for a whole run (taken before any work, so a second run is refused at once); clears
        what killed runs left beside it."""
        out.absolute().parent.mkdir(parents=True, exist_ok=True)
        with lock(out):
            remove_dead(out)
            yield

    @classmethod
    @contextlib.contextmanager
    def staged(cls, out: Path) -> Iterator["OutputFolder"]:
        """A fresh staging folder beside `out`, installed into `out` only if the block completes; holds the lock."""
        cls.check_target(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with lock(out):
            recover(out)
            remove_dead_staging(out)
            staging = out.with_name(f".{out.name}.staging-{os.getpid()}")
            if staging.exists():
                shutil.rmtree(staging)
            staging.mkdir(parents=True)
            try:
                yield cls(staging)
                install(staging, out)
            finally:
                shutil.rmtree(staging, ignore_errors=True)


def _check_writable(out: Path) -> None:
    """The staging name beside `out` fits the file system and its nearest existing parent takes a new folder
    (read-only, permissions): probed by making and removing one, so the error comes before any analysis."""
    parent = out.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    staging = f".{out.name}.staging-{os.getpid()}"
    try:
        limit = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    if len(staging.encode()) > limit:
        raise ReportgenError(f"{out}: folder name too long ({len(out.name.encode())} bytes; reportgen stages the output "
                             f"beside it under a name {len(staging) - len(out.name)} bytes longer, and this file "
                             f"system allows {limit}); choose a shorter --out")
    try:
        probe = Path(tempfile.mkdtemp(prefix=".reportgen-probe-", dir=parent))
        probe.rmdir()
    except OSError as exc:
        raise ReportgenError(f"{out}: cannot write in the folder that would hold it ({exc.strerror or exc}); "
                             f"choose another --out") from None


def _inside(rel: str) -> bool:
    """A relative path that stays inside the folder (status files are data, not trusted paths)."""
    p = Path(rel)
    return bool(rel) and not p.is_absolute() and ".." not in p.parts


def _prune_empty(folder: Path) -> None:
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def _reportgen_name(name: str) -> bool:
    """Whether a top-level name is one a reportgen output may use."""
    return (name.endswith((".html", ".pdf", ".css")) or
            name in (RESULTS, WINDOWS, TIMINGS, FIGURES, CACHE, LEGACY_STATUS, LEGACY_FIGURE_INPUTS, LEGACY_JOURNAL))


def install(staging: Path, out: Path) -> None:
    """Move a finished output from `staging` into `out` file by file (see the module docstring)."""
    out.mkdir(parents=True, exist_ok=True)
    old = sorted(OutputFolder(out).inventory())
    new = sorted(str(p.relative_to(staging)) for p in staging.rglob("*")
                 if p.is_file() and p.relative_to(staging).as_posix() != STATUS)
    write_json(out / JOURNAL, {"staging": staging.name, "old": old, "new": new})
    _finish(staging, out, old, new)


def _finish(staging: Path, out: Path, old: list[str], new: list[str]) -> None:
    """Move what is left in `staging`, remove old files the new output does not have, then the status file."""
    moving = [f for f in new if (staging / f).is_file()]
    existing = set(old)
    # New names first (figures, then pages), then names the old output has, index.html last: until the very end
    # every old page still links to old pages that exist; the status file moves after everything.
    for rel in sorted(moving, key=lambda f: (f in existing or (out / f).exists(), f == "index.html",
                                             not f.startswith(f"{FIGURES}/"), f)):
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / rel, target)
    for rel in sorted(set(old) - set(new)):
        if _inside(rel):
            (out / rel).unlink(missing_ok=True)
    _prune_empty(out / FIGURES)
    if (staging / STATUS).exists():
        (out / CACHE).mkdir(exist_ok=True)
        os.replace(staging / STATUS, out / STATUS)
        (out / LEGACY_STATUS).unlink(missing_ok=True)  # an older reportgen's status, now replaced
    (out / JOURNAL).unlink(missing_ok=True)


def recover(out: Path) -> None:
    """Finish an install that a crash interrupted: the journal names the staging folder and both file lists."""
    (out / LEGACY_JOURNAL).unlink(missing_ok=True)  # an older reportgen's journal names a layout this one does not use
    journal = out / JOURNAL
    if not journal.exists():
        return
    try:
        doc = json.loads(journal.read_text())
        staging = out.with_name(str(doc["staging"]))
        old, new = [str(f) for f in doc["old"]], [str(f) for f in doc["new"]]
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        journal.unlink(missing_ok=True)
        return
    if staging.name.startswith(f".{out.name}.staging-") and (staging / STATUS).exists():
        _finish(staging, out, old, new)  # the status file moves last: if it is still there, finish the job
    else:
        journal.unlink(missing_ok=True)
