"""Figures: matplotlib `Figure` objects (never pyplot), deterministic PNG bytes, names hashed from the inputs.

Every attention heatmap uses one colour scale (0..1 with a square-root norm so weak attention
stays visible) and a colourbar. Axis labels are characters, with visible symbols for space (␣)
and newline (↵). Matplotlib 3.11 lays out right-to-left text itself, so Hebrew strings are passed
in logical order, never reversed by hand.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib.colors import PowerNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

CMAP = "magma_r"
NORM = dict(vmin=0.0, vmax=1.0, gamma=0.5)
VISIBLE = {" ": "␣", "\n": "↵", "\t": "⇥"}
FONT = {"font.family": "DejaVu Sans", "font.size": 8, "svg.hashsalt": "reportgen", "path.simplify": True,
        "text.parse_math": False}  # labels and texts are shown as written: "$x^$" is not mathtext


def visible(text: str) -> list[str]:
    """Characters as axis labels, with symbols for whitespace."""
    return [VISIBLE.get(c, c) for c in text]


def png_bytes(fig: Figure, dpi: int = 90) -> bytes:
    """Render a figure to an RGB PNG (the figure is opaque: no alpha channel, which WeasyPrint would split off and
    encode again for the PDF) with no timestamp or software metadata (deterministic)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return encode_png(canvas)


def encode_png(canvas) -> bytes:
    """A drawn Agg canvas as RGB PNG bytes (see `png_bytes`)."""
    from PIL import Image

    rgb = np.asarray(canvas.buffer_rgba())[..., :3]
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="png", compress_level=3)
    return buf.getvalue()


def _char_ticks(ax, labels: list[str], size: float, pad: float = 1.0) -> None:
    """Label every row and column of a heatmap with its character: one text artist per label (matplotlib's Tick
    objects cost ~1.5 ms each, most of a head figure's drawing time). The axis labels sit below them, as with ticks."""
    from matplotlib.transforms import offset_copy

    ax.set_xticks([])
    ax.set_yticks([])
    fig = ax.get_figure()
    below = offset_copy(ax.get_xaxis_transform(), fig=fig, y=-pad, units="points")  # x in data, y in axes
    left = offset_copy(ax.get_yaxis_transform(), fig=fig, x=-pad, units="points")  # x in axes, y in data
    for i, c in enumerate(labels):
        ax.text(i, 0, c, transform=below, ha="center", va="top", fontsize=size)
        ax.text(0, i, c, transform=left, ha="right", va="center", fontsize=size)
    ax.xaxis.labelpad = pad + 1.35 * size + 2  # the label row's height: characters are one line
    ax.yaxis.labelpad = pad + 1.1 * size + 2  # one character's width, at most about an em


def heatmap(ax, attn: np.ndarray, text: str, title: str):
    """Draw one attention matrix (T, S) on ax with characters on both axes; return the image."""
    img = ax.imshow(attn, cmap=CMAP, norm=PowerNorm(**NORM), interpolation="nearest", aspect="equal")
    labels = visible(text)
    _char_ticks(ax, labels, 9 if len(labels) <= 16 else 7 if len(labels) <= 40 else 5)
    ax.set_xlabel("key (attended-to character)", fontsize=7)
    ax.set_ylabel("query", fontsize=7)
    ax.set_title(title, fontsize=8)
    return img


def role_panel(title: str, text: str, attn: np.ndarray, marks: np.ndarray, rtl: bool) -> bytes:
    """One head on one short window (panels.Panel), legible at its print width of 3.3 in: upright character ticks of
    8 pt, the role's target cells dotted, the last row (the query) outlined; a right-to-left window's keys run right
    to left, as the text reads."""
    n = len(text)
    with matplotlib.rc_context(FONT):
        fig = Figure(figsize=(3.3, 3.35))
        ax = fig.add_axes([0.12, 0.13, 0.7, 0.7])
        img = ax.imshow(attn, cmap=CMAP, norm=PowerNorm(**NORM), interpolation="nearest", aspect="equal")
        ii, jj = np.nonzero(marks)
        ax.scatter(jj, ii, s=5, c="#18a8c0", linewidths=0)
        ax.add_patch(matplotlib.patches.Rectangle((-0.5, n - 1.5), n, 1, fill=False, ec="#c0392b", lw=1.0))
        if rtl:
            ax.invert_xaxis()
        _char_ticks(ax, visible(text), 8)
        ax.set_xlabel("key (attended-to character)" + (", read right to left" if rtl else ""), fontsize=7)
        ax.set_ylabel("query", fontsize=7)
        ax.set_title(title, fontsize=8)
        cb = fig.colorbar(img, cax=fig.add_axes([0.86, 0.13, 0.03, 0.7]))
        cb.ax.tick_params(labelsize=6)
        cb.set_label("attention (square-root scale)", fontsize=6)
        return png_bytes(fig, dpi=200)


def thumbnail(attn: np.ndarray) -> bytes:
    """One head's attention (T, S) as a T × S pixel PNG in the heatmaps' colours (no axes: the page scales it
    up, pixelated, inside a link to the head's page)."""
    from matplotlib import colormaps
    from matplotlib.image import imsave

    rgba = colormaps[CMAP](PowerNorm(**NORM)(np.clip(attn, 0.0, 1.0)), bytes=True)
    buf = io.BytesIO()
    imsave(buf, rgba, format="png", metadata={"Software": None})
    return buf.getvalue()


def diff_head_figure(title: str, a: np.ndarray, b: np.ndarray, a_label: str, b_label: str,
                     positions: int = 48) -> bytes:
    """One head in two runs: held-out mean attention (T, S) of A and of B on the heatmaps' scale, and B − A on a
    linear diverging scale (first `positions` query and key positions)."""
    a, b = a[:positions, :positions], b[:positions, :positions]
    W, H = 11.4, 3.7  # inches; a fixed layout (constrained layout took most of this figure's time)

    def box(x: float, w: float) -> list[float]:  # an axes from x to x + w inches, 0.5 to 3.15 inches high
        return [x / W, 0.5 / H, w / W, 2.65 / H]

    with matplotlib.rc_context(FONT):
        fig = Figure(figsize=(W, H))
        axes = [fig.add_axes(box(0.55, 2.65)), fig.add_axes(box(3.65, 2.65)), fig.add_axes(box(7.75, 2.65))]
        for ax, m, label in ((axes[0], a, a_label), (axes[1], b, b_label)):
            img = ax.imshow(m, cmap=CMAP, norm=PowerNorm(**NORM), interpolation="nearest")
            ax.set_title(f"{label}: mean attention", fontsize=8)
        fig.colorbar(img, cax=fig.add_axes(box(6.45, 0.12)), label="attention weight (square-root scale)")
        d = b - a
        top = max(0.05, float(np.abs(d).max()))
        img = axes[2].imshow(d, cmap="RdBu_r", vmin=-top, vmax=top, interpolation="nearest")
        axes[2].set_title("B − A (red: more attention in B)", fontsize=8)
        fig.colorbar(img, cax=fig.add_axes(box(10.55, 0.12)), label="change in attention weight (linear)")
        for ax in axes:
            ax.set_xlabel("key position", fontsize=7)
            ax.set_ylabel("query position", fontsize=7)
        fig.suptitle(title, fontsize=9, y=1 - 0.12 / H, va="top")
        return png_bytes(fig)


def score_matrix_figure(title: str, detectors: list[str], heads: list[str], ratio: np.ndarray,
                        marked: np.ndarray) -> bytes:
    """Detector x head matrix of observed / chance (log2), with role cells outlined."""
    with matplotlib.rc_context(FONT):
        fig = Figure(figsize=(0.42 * len(heads) + 2.6, 0.25 * len(detectors) + 1.4), layout="constrained")
        ax = fig.add_subplot()
        logr = np.log2(np.clip(np.nan_to_num(ratio, nan=1.0), 1 / 32, 32))
        img = ax.imshow(logr, cmap="RdBu_r", vmin=-5, vmax=5, aspect="auto", interpolation="nearest")
        ax.set_xticks(range(len(heads)), heads, rotation=90)
        ax.set_yticks(range(len(detectors)), detectors)
        for (i, j), flag in np.ndenumerate(marked):
            if flag:
                ax.add_patch(matplotlib.patches.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=1.5, ec="black"))
        fig.colorbar(img, ax=ax, fraction=0.03, pad=0.02,
                     label="log2(held-out mean / uniform chance); 0 = chance")
        ax.set_title(title)
        return png_bytes(fig, dpi=90)


def comparison_figure(families: list[str], counts: dict[str, list[int]], n_heads: dict[str, int]) -> bytes:
    """Share of heads with a replicated role in each pattern family, per model."""
    with matplotlib.rc_context(FONT):
        fig = Figure(figsize=(7.5, 3.2), layout="constrained")
        ax = fig.add_subplot()
        width = 0.8 / max(1, len(counts))
        x = np.arange(len(families))
        for k, (label, c) in enumerate(counts.items()):
            ax.bar(x + k * width, np.asarray(c) / n_heads[label], width, label=label)
        ax.set_xticks(x + width * (len(counts) - 1) / 2, families, rotation=20, ha="right")
        ax.set_ylabel("share of heads with a replicated role")
        ax.set_ylim(0, 1)
        ax.legend()
        ax.grid(axis="y", alpha=0.3)
        return png_bytes(fig)


FIGURE_CODE = ("figures.py", "gridfig.py", "headfig.py", "timefig.py")
CODE_HASH = hashlib.sha256(b"".join(Path(__file__).with_name(n).read_bytes() for n in FIGURE_CODE)).digest()
# a change to any figure code redraws every figure


def circuit_figure(title: str, roles: list[list[str]], edges: list[tuple[str, str, float, bool]],
                   copies: list[str]) -> bytes:
    """Heads as boxes (layer 0 at the bottom; main-role heads in colour with their role, copying heads outlined) and
    composition edges (source, target, cut, firm) as arrows whose width and label give the share of the target's
    role score above chance that removing the source cuts; dashed where the cut may be general disruption (the
    source's removal breaks the model and the cut is not well beyond its cut of the other role heads). `roles[l][h]` is "" for a head without one."""
    L, H = len(roles), len(roles[0])
    at = {f"L{l}H{h}": (h, l) for l in range(L) for h in range(H)}
    with matplotlib.rc_context(FONT):
        fig = Figure(figsize=(max(6.0, 2.0 * H), 1.3 * L + 1.0), layout="constrained")
        ax = fig.add_subplot()
        for k, (src, tgt, cut, firm) in enumerate(edges):
            (x0, y0), (x1, y1) = at[src], at[tgt]
            if x0 == x1 and y1 - y0 > 1:  # past the heads in between of the same column: run beside them
                x0, x1 = x0 + 0.28, x1 + 0.28
            ax.annotate("", (x1, y1 - 0.2), (x0, y0 + 0.2), zorder=2,
                        arrowprops=dict(arrowstyle="-|>", lw=1 + 3 * min(max(cut, 0), 1), color="#b2182b",
                                        linestyle="-" if firm else (0, (3, 2)), shrinkA=0, shrinkB=0))
            t = 0.45 + 0.12 * (k % 3)  # labels on their own line, staggered where lines share a source
            mx, my = x0 + t * (x1 - x0), (y0 + 0.2) + t * ((y1 - 0.2) - (y0 + 0.2))
            ax.text(mx, my, f"−{cut:.0%}", fontsize=7, color="#b2182b", ha="center", va="center",
                    zorder=5, bbox=dict(boxstyle="round,pad=0.12", fc="white", ec="#b2182b", lw=0.4))
        if edges:
            ax.plot([], [], color="#b2182b", lw=2, label="input: removing it cuts the role score by this share")
            if not all(firm for *_, firm in edges):
                ax.plot([], [], color="#b2182b", lw=2, ls=(0, (3, 2)),
                        label="possibly general disruption (its removal breaks the model)")
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2, fontsize=7, frameon=False)
        for name, (x, y) in at.items():
            role = roles[y][x]
            label = name + ("\n" + role.replace(" head", "").replace(" (", "\n(") if role else "")
            if name in copies:
                label += "\n[copies]"
            ax.text(x, y, label, ha="center", va="center", fontsize=7, zorder=4,
                    bbox=dict(boxstyle="round,pad=0.35", fc="#cfe3f1" if role else "#f2f2f2",
                              ec="black" if name in copies else "#999999", lw=2.0 if name in copies else 0.6))
        ax.set_xlim(-0.6, H - 0.4)
        ax.set_ylim(-0.5, L - 0.5)
        ax.set_yticks(range(L), [f"layer {l}" for l in range(L)])
        ax.set_xticks(range(H), [f"head {h}" for h in range(H)])
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        ax.set_title(title)
        return png_bytes(fig)


def _render_all(jobs: list[tuple]) -> list[bytes]:
    """Worker entry: figure jobs of one group, drawn in turn in one process (`FigureWriter.add`'s `group`)."""
    return [_render(job) for job in jobs]


def _render(job: tuple) -> bytes:
    """Worker entry: (function name, args) -> PNG bytes."""
    name, args = job
    if "." in name:  # a figure drawn in another module ("gridfig.grid_figure")
        module, name = name.rsplit(".", 1)
        return getattr(importlib.import_module(f".{module}", __package__), name)(*args)
    return globals()[name](*args)


class FigureWriter:
    """Renders figure jobs (in parallel) into PNGs named by their job key (a hash of the figure code and inputs, so
    every name is known before anything is drawn) and reuses files already present."""

    def __init__(self, folder: Path, workers: int = 2):
        self.folder = folder
        self.workers = workers
        self.jobs: list[tuple[str, tuple]] = []
        self.keys: list[str] = []
        self.groups: list[str | None] = []

    def add(self, function: str, *args, group: str | None = None) -> int:
        """Queue a figure; returns its index into `names`. Figures of one `group` are drawn by one worker in turn
        (split in two while there are fewer groups than workers), for figures that share work in a worker (a
        model's head figures share their static layer: `headfig`)."""
        self.jobs.append((function, args))
        self.keys.append(_job_key(self.jobs[-1]))
        self.groups.append(group)
        return len(self.jobs) - 1

    def _units(self, todo: list[int]) -> list[list[int]]:
        """`todo` as the lists of jobs each worker call draws: each group's jobs together, every other job alone."""
        units, grouped = [], {}
        for k in todo:
            if self.groups[k] is None:
                units.append([k])
            elif self.groups[k] not in grouped:
                grouped[self.groups[k]] = [k]
                units.append(grouped[self.groups[k]])
            else:
                grouped[self.groups[k]].append(k)
        while len(grouped) and len([u for u in units if len(u) > 1]) < self.workers:
            big = max(units, key=len)
            if len(big) < 4:
                break
            i = units.index(big)
            units[i:i + 1] = [big[:len(big) // 2], big[len(big) // 2:]]
        return units

    def names(self) -> list[str]:
        """File names of the queued figures, in job order (the same inputs and code always give the same name)."""
        return [f"{key[:16]}.png" for key in self.keys]

    def run(self, cache: dict[str, str] | None = None, first: tuple[int, ...] = (), between=None,
            meanwhile=None) -> list[str]:
        """Render every job not in `cache` (job key -> file name); return `names()`. Jobs `first` are rendered before
        the others, and `between()` is called in this process as soon as they are on disk, while the workers draw
        the rest (the PDF needs a few figures, the pages all of them). `meanwhile()` is called in this process once
        the workers are started (all forked: it may import), before any figure is waited for; with no workers,
        before the figures are drawn here.

        `cache` is updated in place, so a caller that keeps it skips unchanged figures next time.
        """
        cache = {} if cache is None else cache
        self.folder.mkdir(parents=True, exist_ok=True)
        names = self.names()
        early = set(first)
        todo = sorted((k for k, key in enumerate(self.keys)
                       if not (cache.get(key) == names[k] and (self.folder / names[k]).exists())),
                      key=lambda k: (k not in early, k))  # the `first` jobs, then the rest, each in job order

        def save(k: int, blob: bytes) -> None:
            tmp = self.folder / f".{names[k]}.tmp"  # a killed run never leaves a partial PNG under a figure's name
            tmp.write_bytes(blob)
            tmp.replace(self.folder / names[k])
            cache[self.keys[k]] = names[k]

        with contextlib.ExitStack() as stack:
            get = lambda k: _render(self.jobs[k])  # noqa: E731
            if self.workers > 1 and len(todo) > 2:  # a diff's four heatmaps too
                from .workers import die_with_parent

                pool = stack.enter_context(ProcessPoolExecutor(self.workers, initializer=die_with_parent,
                                                               initargs=(os.getpid(),)))
                stack.callback(pool.shutdown, wait=True, cancel_futures=True)  # `between` failed: stop drawing
                futures = {}
                for unit in self._units(todo):
                    drawn = pool.submit(_render_all, [self.jobs[k] for k in unit])
                    futures.update({k: (drawn, i) for i, k in enumerate(unit)})
                get = lambda k: futures[k][0].result()[futures[k][1]]  # noqa: E731
            if meanwhile is not None:
                meanwhile()
            for k in todo:
                if k not in early and between is not None:
                    between, call = None, between
                    call()  # the first figures are saved; the workers go on with the rest meanwhile
                save(k, get(k))
        if between is not None:
            between()
        return names


def _job_key(job: tuple) -> str:
    """Hash of the figure code, a figure job's function and its inputs (arrays by their bytes)."""
    h = hashlib.sha256(CODE_HASH)

    def feed(x):
        if isinstance(x, np.ndarray):
            h.update(str((x.dtype, x.shape)).encode())
            h.update(np.ascontiguousarray(x).tobytes())
        elif isinstance(x, (list, tuple)):
            h.update(b"[")
            for v in x:
                feed(v)
            h.update(b"]")
        elif isinstance(x, dict):
            feed(sorted(x.items()))
        elif hasattr(x, "__dataclass_fields__"):
            feed([getattr(x, f) for f in x.__dataclass_fields__])
        else:
            h.update(repr(x).encode())

    feed(job)
    return h.hexdigest()
