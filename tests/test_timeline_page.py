"""What the timeline shows: the series that never leave chance are named in one line and not drawn, the step from
which each drawn role stays significant, and a phase change only where the rule finds one."""

from __future__ import annotations

from markupsafe import escape

from reportgen.evidence import PhaseChange, Series, Timeline
from reportgen.phases import RULE
from reportgen.site import make_env
from reportgen.timefig import timeline_args, timeline_figure

STEPS = [250, 500, 1000, 2500, 5000]


def _timeline(phases: list[PhaseChange]) -> Timeline:
    prev = Series("L0H2 previous character", "offset_1", 0, 2, 0.03, [0.2, 0.5, 0.8, 0.85, 0.86],
                  [0.02, 0.45, 0.75, 0.8, 0.82], [0.3, 0.55, 0.85, 0.9, 0.9], significant_from=500, leaves_chance=True)
    flat = Series("L3H0 natural-text induction attention", "induction", 3, 0, 0.05, [0.039, 0.04, 0.041, 0.044, 0.046],
                  [0.03, 0.031, 0.033, 0.036, 0.04], [0.05, 0.05, 0.05, 0.052, 0.053], leaves_chance=False)
    return Timeline(STEPS, [3.0, 2.6, 2.3, 2.2, 2.1], 64, [prev, flat], bits_per_char=[3.1, 2.7, 2.4, 2.3, 2.2],
                    icl=[-0.1, -0.3, -0.5, -0.55, -0.56], icl_ci_low=[-0.12, -0.32, -0.52, -0.57, -0.58],
                    icl_ci_high=[-0.08, -0.28, -0.48, -0.53, -0.54], icl_late=[96, 126], icl_early=[8, 23],
                    phase_changes=phases, phase_rule=RULE)


def _notes(t: Timeline) -> str:
    env = make_env()
    page = env.from_string('{% from "timeline.html.jinja2" import timeline_caption, timeline_notes, timeline_table %}'
                           '{{ timeline_caption(t, "X") }}{{ timeline_notes(t) }}{{ timeline_table(t) }}')
    return " ".join(page.render(t=t).split())


def test_a_series_at_chance_is_named_and_not_drawn_and_the_significant_step_is_said():
    t = _timeline([])
    text = _notes(t)
    assert "L0H2 previous character: step 500." in text
    assert ("Not drawn, as they never leave chance (lower 95% bound at or below the detector's chance at every "
            "checkpoint): L3H0 natural-text induction attention (0.039 → 0.046, chance 0.050).") in text
    assert "No phase change at these checkpoints." in text and str(escape(RULE)) in text
    assert "query positions 96–126 minus the mean loss at positions 8–23" in text
    assert text.count("<tr><td>") == len(STEPS)  # a row per checkpoint
    steps, series, bpc, loss, icl, phases, copying = timeline_args(t)
    assert [s["label"] for s in series] == ["L0H2 previous character"] and bpc == t.bits_per_char
    assert icl["mean"] == t.icl and phases == [] and copying is None
    assert timeline_figure("x", steps, series, bpc, loss, icl, phases)[:4] == b"\x89PNG"


def test_a_phase_change_is_said_with_its_steps_and_roles():
    t = _timeline([PhaseChange(250, 500, 0.2, ["L0H2 previous character"])])
    text = _notes(t)
    assert ("Phase change between steps 250 and 500: the in-context-learning score falls by 0.200 bits/char while "
            "L0H2 previous character rises.") in text
    assert "No phase change" not in text
    assert timeline_args(t)[5] == [(250, 500)]


def test_the_copying_score_is_drawn_tabled_and_named_in_its_phase_change():
    from dataclasses import replace

    t = replace(_timeline([PhaseChange(500, 1000, 0.3, ["L0H2 previous character"], "copying score")]),
                copying=[0.02, 0.01, -0.3, -0.5, -0.55], copying_ci_low=[0.0, -0.01, -0.33, -0.53, -0.58],
                copying_ci_high=[0.04, 0.03, -0.27, -0.47, -0.52], copying_period=64, copying_from=1000, icl_from=250)
    text = _notes(t)
    assert ("Phase change between steps 500 and 1000: the copying score falls by 0.300 bits/char while L0H2 previous "
            "character rises.") in text
    assert ("the in-context-learning score (natural text) is below 0 (upper 95% bound under 0) from step 250 on; the "
            "copying score (repeated passages) is below 0 (upper 95% bound under 0) from step 1000 on.") in text
    assert "on 64 held-out passages of 64 characters, each repeated twice" in text
    assert "<td>-0.300 [-0.330, -0.270]</td>" in text  # the table's copying column
    steps, series, bpc, loss, icl, phases, copying = timeline_args(t)
    assert copying["mean"] == t.copying and phases == [(500, 1000)]
    assert timeline_figure("x", steps, series, bpc, loss, icl, phases, copying)[:4] == b"\x89PNG"
