"""The output folder's lock and what killed runs leave beside it.

One lock file per output (`.NAME.reportgen-lock` beside it) holds the PID of the run writing there; it is
linked into place already written, so no reader sees it empty; an empty one is another process's only while it
is young. Staging folders (`.NAME.staging-PID`) and locks of dead processes are removed by the next run or `clean`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Iterator

from .errors import ReportgenError


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_HELD: set[Path] = set()  # outputs whose lock this process holds (the run takes it first; staging reuses it)
YOUNG_LOCK = 10.0  # seconds: an empty lock younger than this is another process between creating and writing it


def _lock_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.reportgen-lock")


def _holder(lock: Path) -> int | None:
    """The live process holding a lock file, or None when it is free to take over (its process is dead, or it
    is empty and older than YOUNG_LOCK)."""
    try:
        text = lock.read_text().strip()
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        text, age = "", YOUNG_LOCK
    if not text:
        return -1 if age < YOUNG_LOCK else None
    pid = int(text) if text.isdigit() else 0
    return pid if pid and pid != os.getpid() and _alive(pid) else None


@contextlib.contextmanager
def lock(out: Path) -> Iterator[None]:
    """An exclusive lock file beside `out` holding this process's PID (written before the file appears: a
    temporary file linked into place); a lock left by a dead process is taken over. Re-entrant within a
    process, so a run can take it at its start and its staged install reuse it."""
    key = out.absolute()
    if key in _HELD:
        yield
        return
    lock = _lock_path(out)
    tmp = lock.with_name(f"{lock.name}.{os.getpid()}")
    tmp.write_text(str(os.getpid()))
    try:
        for _ in range(3):
            try:
                os.link(tmp, lock)
                break
            except FileExistsError:
                pid = _holder(lock)
                if pid is not None:
                    who = f"process {pid}" if pid > 0 else "a process starting up"
                    raise ReportgenError(f"{out}: another reportgen run ({who}) is writing this folder; wait for "
                                         f"it to finish or choose another --out") from None
                lock.unlink(missing_ok=True)
        else:
            raise ReportgenError(f"{lock}: cannot take the output lock")
    finally:
        tmp.unlink(missing_ok=True)
    _HELD.add(key)
    try:
        yield
    finally:
        _HELD.discard(key)
        lock.unlink(missing_ok=True)


def remove_dead(out: Path) -> None:
    """Staging folders and locks left beside `out` by runs that were killed (up-to-date re-runs and `clean`)."""
    remove_dead_staging(out)
    lock = _lock_path(out)
    if lock.exists() and _holder(lock) is None and out.absolute() not in _HELD:
        lock.unlink(missing_ok=True)
    for tmp in out.parent.glob(f"{lock.name}.*"):
        pid = tmp.name.rsplit(".", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def remove_dead_staging(out: Path) -> None:
    """Staging folders of runs that no longer exist."""
    for p in out.parent.glob(f".{out.name}.staging-*"):
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
