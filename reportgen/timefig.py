"""The emergence timeline figure: role strength with its CI and its detector's chance line over training steps (the
step from which each role stays significant marked, phase changes shaded), and below it the held-out bits/char and
the in-context-learning and copying scores of every checkpoint."""

from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from .figures import FONT, png_bytes  # noqa: E402

ICL_COLOUR = "#7b3294"
COPY_COLOUR = "#1b7837"


def _steps_axis(ax, steps: list[int]) -> None:
    """Log-scaled training steps: every checkpoint labelled when there are few, round steps otherwise."""
    ax.set_xscale("log")
    if len(steps) <= 8:
        ax.set_xticks(steps, [str(x) for x in steps])
    else:
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3)


def timeline_figure(title: str, steps: list[int], series: list[dict], bpc: list[float | None],
                    loss: str = "held-out bits/char", icl: dict | None = None,
                    phases: list[tuple[int, int]] = (), copying: dict | None = None) -> bytes:
    """Top: each drawn series (`series` dicts with label, mean, ci_low, ci_high, chance, significant_from) as its mean
    with a 95% CI band and its chance line (dotted, same colour), a ring at the step from which it stays above
    chance. Bottom: `bpc` (`loss`: what it is) and, when given, the in-context-learning score `icl` (mean, ci_low,
    ci_high) and the copying score `copying` (the same keys) on a second axis, both a later loss minus an earlier
    one in bits/char. `phases`: (step before, step) spans shaded in both panels."""
    with matplotlib.rc_context(FONT):
        fig = Figure(figsize=(7.5, 4.8), layout="constrained")
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
        colours = matplotlib.colormaps["tab10"].colors
        for k, s in enumerate(series):
            c = colours[k % len(colours)]
            mean, low, high = (np.asarray(s[f], dtype=float) for f in ("mean", "ci_low", "ci_high"))
            top.fill_between(steps, low, high, color=c, alpha=0.2, lw=0)
            top.plot(steps, mean, color=c, marker="o", ms=2.5, lw=1.2, label=textwrap.fill(s["label"], 52))
            if s.get("chance") is not None:
                top.axhline(s["chance"], color=c, ls=":", lw=1)
            if s.get("significant_from") is not None:
                at = steps.index(s["significant_from"])
                top.plot([steps[at]], [mean[at]], marker="o", ms=9, mfc="none", mec=c, mew=1.5, ls="none")
        top.plot([], [], color="grey", ls=":", lw=1, label="chance of each role's detector (dotted)")
        top.plot([], [], marker="o", ms=8, mfc="none", mec="grey", mew=1.5, ls="none",
                 label="ring: significant from here on (above its strictest null)")
        top.set_ylabel("held-out statistic\n(mean, 95% CI band)")
        top.set_ylim(0, 1.05)
        top.set_title(title)
        if any(b is not None for b in bpc):
            bottom.plot(steps, [np.nan if b is None else b for b in bpc], color="black", lw=1.2, marker="o", ms=2,
                        label=loss)
        bottom.set_ylabel(loss if loss.endswith("bits/char") else f"{loss}, bits/char")
        handles, labels = bottom.get_legend_handles_labels()
        if icl is not None or copying is not None:
            right = bottom.twinx()
            for score, colour, marker, label in ((icl, ICL_COLOUR, "s", "ICL score: late − early (right)"),
                                                 (copying, COPY_COLOUR, "^", "copying: 2nd − 1st copy (right)")):
                if score is not None:
                    right.fill_between(steps, score["ci_low"], score["ci_high"], color=colour, alpha=0.18, lw=0)
                    right.plot(steps, score["mean"], color=colour, lw=1.2, marker=marker, ms=2.5, label=label)
            right.axhline(0, color="grey", lw=0.6, ls=":")
            right.set_ylabel("later − earlier loss, bits/char\n(below 0: later predicted better)")
            more = right.get_legend_handles_labels()
            handles, labels = handles + more[0], labels + more[1]
        for before, step in phases:
            for ax in (top, bottom):
                ax.axvspan(before, step, color="#fdb863", alpha=0.35, lw=0, zorder=0)
        if phases:
            handles.append(Patch(color="#fdb863", alpha=0.35))
            labels.append("phase change")
        _steps_axis(bottom, steps)
        _steps_axis(top, steps)
        bottom.set_xlabel("training step (log scale)")
        top.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        bottom.legend(handles, labels, fontsize=6, loc="upper left", bbox_to_anchor=(1.2, 1.0))
        return png_bytes(fig)


def timeline_args(t) -> tuple:
    """`timeline_figure`'s arguments after the title, from a results `Timeline`: the series that leave chance, the
    bits/char measured on the timeline's windows (or, in older results, the loss each checkpoint recorded), the
    in-context-learning score and the phase changes."""
    series = [{"label": s.label, "chance": s.chance, "significant_from": s.significant_from, "mean": s.mean,
               "ci_low": s.ci_low, "ci_high": s.ci_high} for s in t.series if s.leaves_chance is not False]
    if t.bits_per_char is not None:
        bpc, loss = t.bits_per_char, "held-out bits/char"
    elif any(b is not None for b in t.heldout_bits_per_char) or not t.recorded:
        bpc, loss = t.heldout_bits_per_char, "held-out bits/char"
    else:
        bpc, loss = t.recorded_bits_per_char, t.recorded
    icl = {"mean": t.icl, "ci_low": t.icl_ci_low, "ci_high": t.icl_ci_high} if t.icl else None
    copying = {"mean": t.copying, "ci_low": t.copying_ci_low, "ci_high": t.copying_ci_high} if t.copying else None
    spans = list(dict.fromkeys((p.step_before, p.step) for p in t.phase_changes or []))  # one shade per span
    return t.steps, series, bpc, loss, icl, spans, copying
