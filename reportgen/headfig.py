"""The head page's figure: example heatmaps three to a row, the mean pattern, the class-to-class ratio and the offset
profile. Every head of a model shares the examples' texts (one character label per row and column, most of the
figure's drawing time), so a worker draws that static layer once per model and draws each head's own artists on a
copy of it (blitting, as matplotlib's animation does): the same PNG bytes whether a head is drawn first or after
another (tested)."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.colors import PowerNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .figures import CMAP, FONT, NORM, encode_png, heatmap  # noqa: E402

DPI = 90
_TEMPLATES: dict[tuple, "_Template"] = {}  # per worker process: the static layer of each model's head figures
_KEEP = 4  # templates kept (a run draws two models' heads; a diff or a course model a few more)


@dataclass(frozen=True)
class HeadFigureData:
    """What the per-head figure shows: example inputs with attention, mean pattern, profiles."""

    title: str
    examples: tuple[tuple[str, str, np.ndarray], ...]  # (caption, text, attn (T, T))
    mean_attn: np.ndarray  # (T, S) mean over held-out windows (first 48 positions shown)
    offset_profile: np.ndarray  # (K,)
    class_names: tuple[str, ...]
    class_ratio: np.ndarray  # (C', C') observed / chance for classes present

    def layout(self) -> tuple:
        """What every head of a model shares: the examples' captions, texts and shapes, the classes, the shapes."""
        return (tuple((c, t, a.shape) for c, t, a in self.examples), self.class_names, self.mean_attn[:48, :48].shape,
                len(self.offset_profile))


def head_figure(d: HeadFigureData) -> bytes:
    """One head's figure as PNG bytes: its model's static layer (built on first use in this process), then the
    head's own artists: its title, example and mean heatmaps, class-ratio panel and offset profile."""
    key = d.layout()
    template = _TEMPLATES.get(key)
    if template is None:
        while len(_TEMPLATES) >= _KEEP:
            _TEMPLATES.pop(next(iter(_TEMPLATES)))
        template = _TEMPLATES[key] = _Template(d)
    return template.draw(d)


def _log_ratio(ratio: np.ndarray) -> np.ndarray:
    return np.log2(np.clip(ratio, 1 / 16, 16))


class _Template:
    """A head figure whose per-head artists are `animated` (left out of the full draw): the full draw is the static
    layer, copied once; `draw` restores it and draws one head's artists over it."""

    def __init__(self, d: HeadFigureData):
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        with matplotlib.rc_context(FONT):
            n = len(d.examples)
            cols = 3
            rows = (n + 2 + cols - 1) // cols  # examples, then the mean pattern and the class matrix
            fig = self.fig = Figure(figsize=(12.0, 3.7 * rows + 2.5))
            grid = fig.add_gridspec(rows + 1, cols, height_ratios=[1] * rows + [0.55], hspace=0.5, wspace=0.6,
                                    left=0.06, right=0.94, top=1 - 0.8 / fig.get_figheight(),
                                    bottom=0.55 / fig.get_figheight())
            slots = [grid[k // cols, k % cols] for k in range(rows * cols)]
            self.examples = []  # (image, its axes' spines): the spines are drawn again over the image
            for k, (caption, text, attn) in enumerate(d.examples):
                ax = fig.add_subplot(slots[k])
                self.examples.append((heatmap(ax, attn, text, caption), list(ax.spines.values())))
            ax = fig.add_subplot(slots[n])
            self.mean = ax.imshow(d.mean_attn[:48, :48], cmap=CMAP, norm=PowerNorm(**NORM), interpolation="nearest")
            ax.set_title("mean over held-out windows\n(first 48 positions)", fontsize=8)
            ax.set_xlabel("key position", fontsize=7)
            ax.set_ylabel("query position", fontsize=7)
            fig.colorbar(self.mean, ax=ax, fraction=0.046, pad=0.04, label="attention weight (square-root scale)")
            self.mean_spines = list(ax.spines.values())
            ax = self.classes = fig.add_subplot(slots[n + 1])  # the whole panel is the head's: its cells' numbers
            self.ratio = ax.imshow(_log_ratio(d.class_ratio), cmap="RdBu_r", vmin=-3, vmax=3)
            ax.set_xticks(range(len(d.class_names)), d.class_names, rotation=40, ha="right")
            ax.set_yticks(range(len(d.class_names)), d.class_names)
            ax.set_xlabel("key class")
            ax.set_ylabel("query class")
            ax.set_title("attention by class: observed / chance (cells)")
            self.cells = {(i, j): ax.text(j, i, "", ha="center", va="center", fontsize=7)
                          for (i, j), _ in np.ndenumerate(d.class_ratio)}
            cb = fig.colorbar(self.ratio, ax=ax, fraction=0.046, pad=0.04, label="observed / chance (log scale)")
            cb.set_ticks([-3, -2, -1, 0, 1, 2, 3], labels=["⅛", "¼", "½", "1", "2", "4", "8"])
            ax = self.offsets = fig.add_subplot(grid[rows, :])  # its bars and y scale are the head's
            self.bars = ax.bar(np.arange(len(d.offset_profile)), d.offset_profile, color="#5b3f8c", width=0.8)
            ax.set_xlabel("offset i − j (0 = itself, 1 = previous character)")
            ax.set_ylabel("mean attention")
            ax.set_title("offset profile (held-out)")
            ax.grid(axis="y", alpha=0.3)
            self.title = fig.suptitle("", fontsize=10)
            for artist in (*(img for img, _ in self.examples), self.mean, self.classes, self.offsets, self.title):
                artist.set_animated(True)
            fig.set_dpi(DPI)
            self.canvas = FigureCanvasAgg(fig)
            self.canvas.draw()
            self.background = self.canvas.copy_from_bbox(fig.bbox)

    def draw(self, d: HeadFigureData) -> bytes:
        """The head's PNG: the static layer, then the head's artists in drawing order (spines over images)."""
        with matplotlib.rc_context(FONT):
            for (image, _), (_, _, attn) in zip(self.examples, d.examples):
                image.set_data(attn)
            self.mean.set_data(d.mean_attn[:48, :48])
            ratio = _log_ratio(d.class_ratio)
            self.ratio.set_data(ratio)
            for (i, j), cell in self.cells.items():
                cell.set_text(f"{d.class_ratio[i, j]:.1f}")
                cell.set_color("white" if abs(ratio[i, j]) > 1.8 else "black")
            for bar, height in zip(self.bars, d.offset_profile):
                bar.set_height(height)
            self.offsets.set_ylim(0, max(0.05, float(d.offset_profile.max()) * 1.1))
            self.title.set_text(d.title)
            self.canvas.restore_region(self.background)
            for image, spines in [*self.examples, (self.mean, self.mean_spines)]:
                self.fig.draw_artist(image)
                for spine in spines:
                    self.fig.draw_artist(spine)
            for artist in (self.classes, self.offsets, self.title):
                self.fig.draw_artist(artist)
            return encode_png(self.canvas)
