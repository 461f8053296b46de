"""The layer × head grid: every head of a model on one held-out passage, drawn at its print size with character ticks.

The figure is drawn 7.0 in wide, the PDF's text width, so its 8 pt ticks print at 8 pt. A passage of a few dozen
characters cannot carry legible ticks in a panel 1.5 in wide: the grid shows the last `window_size` characters of
the passage (the attention its queries give to the characters before the window is not drawn), as many as fit at
about 9 pt a character, upright, on the bottom row (keys) and the left column (queries) only. Right-to-left text
reads right to left along the key axis, as the evidence panels do; matplotlib lays out each character itself.
"""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure

from .figures import CMAP, FONT, NORM, png_bytes, visible

WIDTH = 7.0  # inches: the PDF's text width (A4 less 2 × 16 mm)
MAX_HEIGHT = 7.75  # inches: under the PDF's 215 mm image height (never scaled down), and fits below a chapter's
# first paragraph
TICK = 8.0  # points
CELL = 9.0  # points per character: an 8 pt character and a little air
LEFT, GAP, VGAP, BOTTOM, TOP = 0.42, 0.1, 0.2, 0.85, 0.28  # inches around and between the panels


def panel_size(n_layers: int, n_heads: int) -> float:
    """Side of one head's panel in inches: the heads fill the width, the layers at most `MAX_HEIGHT`."""
    across = (WIDTH - LEFT - 0.1 - GAP * (n_heads - 1)) / n_heads
    down = (MAX_HEIGHT - BOTTOM - TOP - VGAP * n_layers) / n_layers
    return max(0.3, min(across, down))


def window_size(n_layers: int, n_heads: int) -> int:
    """Characters a panel shows: as many as fit at `CELL` points each (between 6 and 16)."""
    return int(np.clip(panel_size(n_layers, n_heads) * 72 // CELL, 6, 16))


def grid_figure(title: str, text: str, attn: np.ndarray, roles: list[list[str]], rtl: bool = False) -> bytes:
    """The grid (`draw`) as PNG bytes."""
    with matplotlib.rc_context(FONT):
        return png_bytes(draw(title, text, attn, roles, rtl), dpi=150)


def draw(title: str, text: str, attn: np.ndarray, roles: list[list[str]], rtl: bool = False) -> Figure:
    """Every layer × head (attn: (L, H, T, T) on `text`) on the last `window_size` characters of the passage, each
    panel titled with its head and replicated role; character ticks of 8 pt on the outer row and column."""
    L, H = attn.shape[:2]
    text = text[:attn.shape[-1]]
    p = panel_size(L, H)
    n = min(len(text), window_size(L, H))
    s = len(text) - n
    labels = visible(text[s:])
    height = TOP + L * (p + VGAP) + BOTTOM
    with matplotlib.rc_context(FONT):
        fig = Figure(figsize=(WIDTH, height))
        img = None
        for l in range(L):
            for h in range(H):
                x, y = LEFT + h * (p + GAP), height - TOP - (l + 1) * (p + VGAP) + 0.02
                ax = fig.add_axes([x / WIDTH, y / height, p / WIDTH, p / height])
                img = ax.imshow(attn[l, h, s:, s:], cmap=CMAP, norm=PowerNorm(**NORM), interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if rtl:
                    ax.invert_xaxis()
                role = roles[l][h] or "no role"
                role = role if len(role) <= 22 else role[:21] + "…"
                ax.set_title(f"L{l}H{h} · {role}", fontsize=6.5, pad=2)
                for i, c in enumerate(labels):
                    if l == L - 1:
                        ax.annotate(c, (i, 0), xycoords=("data", "axes fraction"), xytext=(0, -2),
                                    textcoords="offset points", ha="center", va="top", fontsize=TICK,
                                    annotation_clip=False)
                    if h == 0:
                        ax.annotate(c, (0, i), xycoords=("axes fraction", "data"), xytext=(-2, 0),
                                    textcoords="offset points", ha="right", va="center", fontsize=TICK,
                                    annotation_clip=False)
                if h == 0:
                    ax.set_ylabel("query", fontsize=7, labelpad=TICK + 4)
                if l == L - 1:
                    ax.set_xlabel("key" + (", read right to left" if rtl else ""), fontsize=7, labelpad=TICK + 5)
        cax = fig.add_axes([LEFT / WIDTH, 0.36 / height, (WIDTH - LEFT - 0.1) / WIDTH * 0.5, 0.1 / height])
        cb = fig.colorbar(img, cax=cax, orientation="horizontal")
        cb.ax.tick_params(labelsize=6.5)
        cb.set_label("attention weight (square-root scale)", fontsize=6.5)
        shown = f"its last {n} characters" if s else f"all {n} characters"
        fig.suptitle(f"{title}: a held-out passage of {len(text)} characters, {shown} shown", fontsize=8.5,
                     y=1 - 0.08 / height, va="top")
        return fig
