"""Process-wide settings a command makes before any work (`cli.main`); forked workers inherit them."""

from __future__ import annotations

import os
import sys


def one_blas_thread() -> None:
    """numpy's OpenBLAS (the bootstrap's matrix products) on one thread, unless the user chose a count: with a
    thread per core its sums are split by the core count, so CIs would differ between machines in their last
    bits (measured: 37 % of a bootstrap's resample means, 6e-16 relative), and a diff's two sides, analysed in
    two processes, would each start a thread per core (its bootstrap ran 2x slower on 2 cores). The default run's
    results.json is identical either way, and as fast (measured). Read when numpy loads."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def reuse_freed_memory() -> bool:
    """Let glibc's malloc keep freed memory for the next batch's tensors; True if set. By default it hands a freed
    block above its mmap threshold (at most 32 MB; a forward pass's attention weights are 33 MB) back to the
    system and trims the free top of its heap, so every batch faults its temporaries in again, page by page: a
    forward pass with its weights ran 15-25 % slower (measured; 3-6x the page faults). The same arithmetic and
    results; what is freed stays with the process until it exits. Not where you set glibc's MALLOC_ variables
    yourself, nor without glibc."""
    if not sys.platform.startswith("linux") or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    import ctypes

    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    # M_MMAP_THRESHOLD (-3) and M_TRIM_THRESHOLD (-1) at 1 GiB, M_TOP_PAD (-2) 64 MiB; glibc returns 1 when it takes one
    return all(mallopt(param, value) == 1 for param, value in ((-3, 1 << 30), (-1, 1 << 30), (-2, 64 << 20)))
