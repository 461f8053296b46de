"""The layer × head grid: drawn at the PDF's text width, with upright 8 pt character ticks that do not collide."""

from __future__ import annotations

import re

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from reportgen.config import template_dir
from reportgen.gridfig import TICK, WIDTH, draw, grid_figure


def _attn(L: int, H: int, T: int) -> np.ndarray:
    a = np.tril(np.random.default_rng(0).random((L, H, T, T)))
    return a / a.sum(-1, keepdims=True)


def _ticks(fig, L: int, H: int):
    """(x tick texts of the bottom-left panel, y tick texts of the top-left panel), each in character order."""
    FigureCanvasAgg(fig).draw()
    axes = fig.axes[:L * H]
    def texts(ax):
        return [t for t in ax.texts if t.get_fontsize() == TICK]
    bottom, top = texts(axes[(L - 1) * H]), texts(axes[0])
    xs = [t for t in bottom if t.get_ha() == "center"]
    ys = [t for t in top if t.get_ha() == "right"]
    return xs, ys, axes


def _page_text_width_in() -> float:
    css = (template_dir() / "print.css").read_text(encoding="utf-8")
    page = re.search(r"@page\s*\{\s*size:\s*A4;\s*margin:\s*(\d+)mm\s+(\d+)mm", css)
    return (210 - 2 * int(page.group(2))) / 25.4


@pytest.mark.parametrize("rtl", [False, True])
def test_grid_ticks_are_upright_8pt_characters_at_print_size_and_do_not_collide(rtl):
    L, H, text = 4, 4, ("בראשית ברא אלהים את השמים"[:24] if rtl else "In the beginning God, cre"[:24])
    fig = draw("m", text, _attn(L, H, 24), [["r"] * H] * L, rtl)
    assert fig.get_figwidth() == pytest.approx(WIDTH) == pytest.approx(_page_text_width_in(), abs=0.01)
    xs, ys, axes = _ticks(fig, L, H)
    n = len(xs)
    assert n >= 10 and [t.get_text() for t in xs] == [{" ": "␣"}.get(c, c) for c in text[-n:]]
    assert [t.get_text() for t in ys] == [t.get_text() for t in xs]
    for t in xs + ys:
        assert t.get_fontsize() >= 8 and t.get_rotation() == 0
    # only the outer row and column carry ticks
    assert all(not [t for t in ax.texts if t.get_fontsize() == TICK] for ax in axes[1:(L - 1) * H] if ax not in
               (axes[k * H] for k in range(L)))
    r = fig.canvas.get_renderer()
    bx = [t.get_window_extent(r) for t in xs]
    centres = [b.x0 + b.width / 2 for b in bx]
    assert centres == sorted(centres, reverse=rtl)  # keys read right to left in a right-to-left passage
    boxes = sorted(bx, key=lambda b: b.x0)
    assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:]))  # no two key characters overlap
    by = sorted((t.get_window_extent(r) for t in ys), key=lambda b: b.y0)
    assert all(a.y1 <= b.y0 + 1 for a, b in zip(by, by[1:]))  # nor two query characters (a pixel of leading)


def test_a_grid_of_many_heads_still_fits_the_width_and_keeps_its_ticks_apart():
    L, H = 6, 8
    fig = draw("m", "abcdefghijklmnopqrstuvwx", _attn(L, H, 24), [["r"] * H] * L)
    assert fig.get_figwidth() == pytest.approx(WIDTH) and fig.get_figheight() <= 8.46  # the PDF's 215 mm
    xs, _, _ = _ticks(fig, L, H)
    r = fig.canvas.get_renderer()
    boxes = sorted((t.get_window_extent(r) for t in xs), key=lambda b: b.x0)
    assert len(boxes) >= 6 and all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:]))
    assert grid_figure("m", "abcdefghijklmnopqrstuvwx", _attn(L, H, 24), [["r"] * H] * L)[:8] == b"\x89PNG\r\n\x1a\n"
