"""Figures: deterministic bytes, content-hashed names, and Hebrew laid out right-to-left in the PNG."""

from __future__ import annotations

import io

import matplotlib.image as mpimg
import numpy as np
from matplotlib.figure import Figure

from reportgen.figures import FONT, FigureWriter, png_bytes


def _ink_columns(text: str) -> np.ndarray:
    """Column profile of the ink of `text` rendered alone (dark = ink)."""
    import matplotlib

    with matplotlib.rc_context(FONT):
        fig = Figure(figsize=(2, 0.6))
        fig.text(0.1, 0.3, text, fontsize=20)
        img = mpimg.imread(io.BytesIO(png_bytes(fig, dpi=100)))[..., :3].mean(-1)
    return (img < 0.5).sum(0)


def test_hebrew_text_is_rendered_right_to_left():
    """'אב' must show א to the right of ב: compare with each letter rendered alone."""
    alef, bet = _ink_columns("א"), _ink_columns("בבבב")  # distinct widths make the match unambiguous
    both = _ink_columns("אבבבב")
    width_a = np.nonzero(alef)[0]
    ink = np.nonzero(both)[0]
    # The rightmost ink block of the word must have alef's width, not bet's.
    right_block = both[ink[-1] - (width_a[-1] - width_a[0]): ink[-1] + 1]
    left_block = both[ink[0]: ink[0] + (width_a[-1] - width_a[0]) + 1]
    profile = alef[width_a[0]: width_a[-1] + 1]
    err_right = np.abs(right_block - profile).sum()
    err_left = np.abs(left_block - profile).sum()
    assert err_right < err_left, (err_right, err_left)
    assert bet.sum() > 0


def test_figures_are_deterministic_and_named_by_their_inputs(tmp_path):
    rng = np.random.default_rng(0)
    attn = np.tril(rng.random((2, 2, 6, 6)))
    attn /= attn.sum(-1, keepdims=True)
    names = []
    for run in ("a", "b"):
        fw = FigureWriter(tmp_path / run, workers=1)
        fw.add("gridfig.grid_figure", "title", "HELLO!", attn, [["x", "y"], ["z", "w"]])
        names.append(fw.run())
    assert names[0] == names[1]
    assert (tmp_path / "a" / names[0][0]).read_bytes() == (tmp_path / "b" / names[1][0]).read_bytes()
    cache: dict = {}
    fw = FigureWriter(tmp_path / "c", workers=1)
    fw.add("gridfig.grid_figure", "title", "HELLO!", attn, [["x", "y"], ["z", "w"]])
    first = fw.run(cache)
    (tmp_path / "c" / first[0]).touch()
    mtime = (tmp_path / "c" / first[0]).stat().st_mtime_ns
    assert fw.run(cache) == first and (tmp_path / "c" / first[0]).stat().st_mtime_ns == mtime


def test_figure_cache_keys_change_with_the_figure_code(monkeypatch):
    from reportgen import figures

    job = ("png_bytes", (np.zeros(2),))
    before = figures._job_key(job)
    monkeypatch.setattr(figures, "CODE_HASH", b"other code")
    assert figures._job_key(job) != before


def _head_data(rng: np.random.Generator, title: str) -> "HeadFigureData":
    from reportgen.headfig import HeadFigureData

    def attn(n: int) -> np.ndarray:
        a = np.tril(rng.random((n, n)) ** 8)
        return a / a.sum(1, keepdims=True)

    examples = tuple((f"input {t}", t, attn(len(t))) for t in ("the cat", "in the beginning", "ab abab ab"))
    return HeadFigureData(title, examples, attn(64), rng.random(17), ("letter", "space", "punct"), rng.random((3, 3)) * 4)


def test_head_figures_drawn_on_a_shared_layer_equal_fresh_ones():
    """A worker draws a model's static layer once and each head over it: a head's PNG must not depend on which heads
    the worker drew before (nor on its template's first head), and must show the head's own numbers."""
    from reportgen import headfig

    rng = np.random.default_rng(1)
    heads = [_head_data(rng, f"L0H{k}: role {k}") for k in range(3)]
    headfig._TEMPLATES.clear()
    in_turn = [headfig.head_figure(d) for d in heads]
    for k, d in enumerate(heads):
        headfig._TEMPLATES.clear()
        assert headfig.head_figure(d) == in_turn[k]  # drawn first, on its own template
    assert headfig.head_figure(heads[0]) == in_turn[0]  # after another head, on that head's template
    assert len(set(in_turn)) == 3  # each head's own data is drawn
    for a, b in ((0, 1), (1, 2)):  # the heads differ in their heatmaps, not only in the title
        pa, pb = (mpimg.imread(io.BytesIO(in_turn[k]))[..., :3] for k in (a, b))
        assert np.abs(pa - pb)[pa.shape[0] // 3:].sum() > 100


def test_head_figure_blitting_equals_one_full_draw():
    """The static layer plus the head's artists gives the pixels of drawing the whole figure at once."""
    from reportgen import headfig

    d = _head_data(np.random.default_rng(2), "L1H2: role")
    headfig._TEMPLATES.clear()
    blitted = headfig.head_figure(d)
    template = next(iter(headfig._TEMPLATES.values()))
    for artist in (*(img for img, _ in template.examples), template.mean, template.classes, template.offsets,
                   template.title):
        artist.set_animated(False)
    import matplotlib

    with matplotlib.rc_context(FONT):
        whole = png_bytes(template.fig, dpi=headfig.DPI)
    a, b = (mpimg.imread(io.BytesIO(x))[..., :3] for x in (blitted, whole))
    assert a.shape == b.shape and np.abs(a - b).max() == 0
    headfig._TEMPLATES.clear()


def test_grouped_figures_are_drawn_together_and_equal_ungrouped_ones(tmp_path):
    """A group's figures go to one worker call (split in two while there are fewer groups than workers); the files
    are the same as when each figure is its own job."""
    rng = np.random.default_rng(4)
    heads = [_head_data(rng, f"L0H{k}: role") for k in range(6)]
    other = [_head_data(rng, f"L1H{k}: role") for k in range(2)]
    plain, grouped = FigureWriter(tmp_path / "plain", workers=2), FigureWriter(tmp_path / "grouped", workers=2)
    for d in heads:
        plain.add("headfig.head_figure", d)
        grouped.add("headfig.head_figure", d, group="a")
    grouped.add("gridfig.grid_figure", "title", "HELLO!", np.full((2, 2, 6, 6), 1 / 6), [["x", "y"], ["z", "w"]])
    assert grouped._units(list(range(7))) == [[0, 1, 2], [3, 4, 5], [6]]  # one group, two workers: halves
    for d in other:
        grouped.add("headfig.head_figure", d, group="b")
    assert grouped._units(list(range(9))) == [[0, 1, 2, 3, 4, 5], [6], [7, 8]]  # two groups: kept whole
    names = plain.run()
    assert grouped.run()[:6] == names
    for name in names:
        assert (tmp_path / "plain" / name).read_bytes() == (tmp_path / "grouped" / name).read_bytes()
