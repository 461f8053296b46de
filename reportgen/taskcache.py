"""The cache of per-checkpoint analyses: one root, one key recipe, atomic entries, least-recently-used pruning.

Entries live under `root()` ($REPORTGEN_CACHE, else ~/.cache/reportgen), one folder per kind: `timeline/<key>.npz`,
one emergence-timeline point (`points.py`), and `analysis/<key>/`, a checkpoint's whole analysis as `reportgen diff`
reads it (`sides.py`). A key hashes what the numbers depend on: the checkpoint's bytes and the files the loader may
read beside it (`sidecars`), the text, the settings and the code, so a re-run, a longer series or another diff
reuses what was computed before. An entry is written under a temporary name in its own folder and renamed into
place (`store`): a killed writer leaves only a temporary name, which is never read. An entry that cannot be read
back is a miss, removed and computed again (`read`). Every hit touches the entry's mtime, the order `prune`
(`reportgen cache prune`) removes by: least recently used first. Pruning removes only names this layout gives
(entries, and temporary names older than an hour), never follows a symbolic link, and leaves any other file alone.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

from .errors import ReportgenError

T = TypeVar("T")


@dataclass(frozen=True)
class Kind:
    """One kind of entry: how its names end, whether it is a folder, and what it holds (for `reportgen cache`)."""

    suffix: str
    folder: bool
    holds: str


KINDS = {"timeline": Kind(".npz", False, "emergence-timeline points, one per checkpoint"),
         "analysis": Kind("", True, "checkpoints analysed for reportgen diff"),
         "diff": Kind("", True, "analyses kept by reportgen before this cache: no longer read, only pruned")}
TEMPORARY = re.compile(r"\.?[0-9a-f]{40}(?:\.npz)?\.(?:[\w-]+\.(?:tmp|del)|tmp-\d+)")  # also older reportgens' names
STALE = 3600  # seconds: a temporary name this old is a killed writer's leftover, not a write in progress


def root() -> Path:
    """Where the cache is: $REPORTGEN_CACHE, else the user's cache folder."""
    if os.environ.get("REPORTGEN_CACHE"):
        return Path(os.environ["REPORTGEN_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "reportgen"


def entry(kind: str, key: str) -> Path:
    """The path of the entry of `kind` (a file or a folder) under `key`."""
    return root() / kind / f"{key[:40]}{KINDS[kind].suffix}"


# ---- keys ------------------------------------------------------------------------------------------------------

def code_version(module: str) -> str:
    """Hash of the code a task depends on: `module` and every reportgen module it imports, directly or through
    others (function-level imports included), so a change to pages or figures keeps the cache."""
    package = Path(__file__).resolve().parent
    seen, todo, h = set(), [module], hashlib.sha256()
    while todo:
        name = todo.pop()
        if name in seen or not (package / f"{name}.py").is_file():
            continue
        seen.add(name)
        for node in ast.walk(ast.parse((package / f"{name}.py").read_bytes())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                todo += [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
    for name in sorted(seen):
        h.update(name.encode() + b"\0" + (package / f"{name}.py").read_bytes())
    return h.hexdigest()


def text_digest(ids, classes) -> str:
    """Hash of the token ids of a text and the class of each vocabulary symbol."""
    import numpy as np

    h = hashlib.sha256(np.ascontiguousarray(ids, dtype=np.int64).tobytes())
    h.update(json.dumps([classes.language, list(classes.vocab), list(classes.codes)]).encode())
    return h.hexdigest()


SIDECARS = ("tokenizer.json", "props.json", "meta.pkl")
STEP = re.compile(r"(?:^checkpoint_step|step_?)(\d+)")


def sidecars(path: Path) -> list[Path]:
    """The files beside or above a checkpoint that the loader may read for it (vocabulary, hyperparameters,
    nanoGPT's meta.pkl), whether or not they exist: their bytes are part of its keys."""
    near = [path.parent, path.parent.parent, path.parent.parent.parent]
    files = [folder / name for folder in near[:2] for name in SIDECARS]
    step = STEP.search(path.name) or STEP.search(path.parent.name)
    if step:
        files += [folder / f"checkpoint_step{step.group(1)}_props.json" for folder in near[:2]]
    return files + [f for folder in near for f in sorted(folder.glob("data/*/meta.pkl"))]


def task_key(path: Path, text: str, settings: dict, code: str) -> str:
    """Key of a task on one checkpoint: its bytes and its sidecar files (`sidecars`), the text (`text_digest`), the
    settings that change numbers and the code (`code_version`)."""
    from .config import file_sha256

    h = hashlib.sha256(file_sha256(path).encode())
    for f in sidecars(path):
        h.update(f"{f.name}:{file_sha256(f) if f.is_file() else '-'}".encode())
    h.update(json.dumps([text, settings, code], sort_keys=True, default=str).encode())
    return h.hexdigest()


# ---- entries ---------------------------------------------------------------------------------------------------

def read(kind: str, key: str, load: Callable[[Path], T]) -> T | None:
    """`load(path)` of the entry, touched as just used; None when there is none or it cannot be read back (damaged,
    or half removed by a prune): such an entry is removed, and the caller computes it again."""
    path = entry(kind, key)
    if path.is_symlink() or not path.exists():  # this cache writes no links: a link is not an entry
        return None
    try:
        value = load(path)
    except Exception:  # noqa: BLE001 - whatever a damaged entry raises (truncated zip, bad JSON) is a miss
        _discard(path)
        return None
    try:
        os.utime(path)  # most recently used: pruned last
    except OSError:
        pass
    return value


def store(kind: str, key: str, write: Callable[[Path], None]) -> bool:
    """Keep an entry: `write(path)` fills a new temporary file or folder beside the entry, which is then renamed into
    place (a reader sees a whole entry or none). False when the cache cannot be written (read-only, full: that
    only costs time) or another process stored the same folder entry first."""
    final = entry(kind, key)
    tmp = final.with_name(f".{final.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir() if KINDS[kind].folder else tmp.touch(exist_ok=False)
        write(tmp)
        for f in sorted(tmp.iterdir()) if tmp.is_dir() else [tmp]:  # on disk before the rename makes it visible
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, final)  # a folder replaces only an empty one: a damaged entry was removed by `read`
        return True
    except BaseException as exc:  # failed or interrupted: no temporary name left behind either
        _remove(tmp)
        if not isinstance(exc, OSError):
            raise
        return False


def _discard(path: Path) -> None:
    """Remove an entry: renamed to a temporary name first (no reader sees it half removed), then deleted."""
    gone = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.del")
    try:
        os.rename(path, gone)
    except OSError:  # already removed by another process
        return
    _remove(gone)


def _remove(path: Path) -> None:
    """Delete a file or a folder; a symbolic link is deleted itself, never what it points to."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Entry:
    """A name of this cache's layout found on disk: an entry, or a temporary name (a write, or a killed one)."""

    kind: str
    path: Path
    size: int  # bytes (a folder: its files)
    used: float  # mtime: when it was written or last read
    temporary: bool


def entries() -> list[Entry]:
    """Every entry and temporary name of every kind; other files, and symbolic links, are not the cache's."""
    found = []
    for kind, k in KINDS.items():
        folder = root() / kind
        if folder.is_symlink() or not folder.is_dir():
            continue
        named = re.compile(rf"[0-9a-f]{{40}}{re.escape(k.suffix)}")
        for item in os.scandir(folder):
            temporary = TEMPORARY.fullmatch(item.name) is not None
            if item.is_symlink() or not (temporary or named.fullmatch(item.name)):
                continue
            if not temporary and item.is_dir(follow_symlinks=False) != k.folder:
                continue
            found.append(Entry(kind, Path(item.path), _size(Path(item.path)), item.stat(follow_symlinks=False).st_mtime,
                               temporary))
    return found


def _size(path: Path) -> int:
    if not path.is_dir():
        return path.lstat().st_size
    return sum((Path(top) / f).lstat().st_size for top, _, files in os.walk(path) for f in files)


def prune(max_size: int | None = None, older_than: float | None = None) -> list[Entry]:
    """Remove the entries not used for `older_than` days, then the least recently used until the cache holds at most
    `max_size` bytes, and every temporary name older than an hour. What was removed, oldest first."""
    now, removed = time.time(), []
    found = sorted(entries(), key=lambda e: e.used)
    total = sum(e.size for e in found)
    for e in found:
        if e.temporary:
            drop = now - e.used > STALE  # a younger one may be a write in progress
        else:
            drop = (older_than is not None and now - e.used > older_than * 86400
                    or max_size is not None and total > max_size)
        if drop:
            _remove(e.path) if e.temporary else _discard(e.path)
            total -= e.size
            removed.append(e)
    return removed


# ---- reportgen cache -------------------------------------------------------------------------------------------

UNITS = {"": 1, "B": 1, "K": 10**3, "KB": 10**3, "M": 10**6, "MB": 10**6, "G": 10**9, "GB": 10**9, "T": 10**12,
         "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*")


def parse_size(text: str) -> int:
    """Bytes from '500MB', '2GB', '1.5GiB', '800k' or '1000000' (K, M, G, T are powers of 1000; KiB... of 1024)."""
    m = SIZE.fullmatch(text)
    if not m or m.group(2).upper() not in UNITS:
        raise ReportgenError(f"--max-size {text!r}: expected a size such as 500MB, 2GB or 1.5GiB (bytes, or a number "
                             f"with K, M, G, T (powers of 1000) or KiB, MiB, GiB, TiB)")
    return int(float(m.group(1)) * UNITS[m.group(2).upper()])


def parse_days(text: str) -> float:
    """Days from '30' or '0.5'."""
    try:
        days = float(text)
    except ValueError:
        days = math.nan
    if not math.isfinite(days) or days < 0:
        raise ReportgenError(f"--older-than {text!r}: expected a number of days (0 or more), such as 30 or 0.5")
    return days


def human(size: float) -> str:
    """A byte count as people read it, to 3 significant digits: 0 B, 812 kB, 41.3 MB, 2.1 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size:.0f} B"


def _shown(path: Path) -> str:
    """A path with the home folder as ~ (no user name in what is printed)."""
    home = str(Path.home())
    return "~" + str(path)[len(home):] if str(path) == home or str(path).startswith(home + os.sep) else str(path)


def command(args: argparse.Namespace) -> int:
    """`reportgen cache`: where the cache is and what each kind holds; `reportgen cache prune`: remove entries."""
    if args.action == "prune":
        if args.max_size is None and args.older_than is None:
            raise ReportgenError("cache prune needs --max-size SIZE (e.g. 2GB) or --older-than DAYS, or both")
        size = None if args.max_size is None else parse_size(args.max_size)
        days = None if args.older_than is None else parse_days(args.older_than)
        removed = prune(size, days)
        for e in removed:
            age = (time.time() - e.used) / 86400
            print(f"removed {e.kind}/{e.path.name} ({human(e.size)}, last used {age:.1f} days ago"
                  f"{'; a killed write' if e.temporary else ''})")
        left = entries()
        print(f"pruned {len(removed)} entr{'y' if len(removed) == 1 else 'ies'} ({human(sum(e.size for e in removed))});"
              f" {human(sum(e.size for e in left))} left in {_shown(root())}")
        return 0
    found = entries()
    print(f"cache: {_shown(root())} ({'$REPORTGEN_CACHE' if os.environ.get('REPORTGEN_CACHE') else 'default'})")
    for kind, k in KINDS.items():
        mine = [e for e in found if e.kind == kind]
        if mine or kind != "diff":
            print(f"  {kind:<9} {sum(not e.temporary for e in mine):>6} entries {human(sum(e.size for e in mine)):>10}"
                  f"   {k.holds}")
    print(f"  {'total':<9} {sum(not e.temporary for e in found):>6} entries {human(sum(e.size for e in found)):>10}")
    return 0


def add_command(sub) -> None:
    """The `cache` subcommand and its `prune` action (added to the command line's subparsers `sub`)."""
    c = sub.add_parser("cache", help="where the cache of analysed checkpoints is and what it holds; prune it",
                       description="Checkpoint analyses are cached by checkpoint, text, settings and code: the "
                                   "timeline's points (timeline/) and the analyses reportgen diff reads (analysis/), "
                                   "under $REPORTGEN_CACHE (default ~/.cache/reportgen). Without an action: where it "
                                   "is, and entries and bytes per kind.")
    c.set_defaults(func=command, action=None)
    p = c.add_subparsers(dest="action").add_parser(
        "prune", help="remove least-recently-used entries (only the cache's own files)",
        description="Remove cache entries, least recently used first (a diff or run that reuses an entry marks it "
                    "used), and temporary files of killed writes older than an hour. Only names the cache itself "
                    "writes are removed; other files in the folder and symbolic links are left alone.")
    p.add_argument("--max-size", metavar="SIZE",
                   help="remove least-recently-used entries until the cache holds at most SIZE (500MB, 2GB, 1.5GiB)")
    p.add_argument("--older-than", metavar="DAYS", help="remove entries not used for more than DAYS days")
