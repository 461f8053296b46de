"""The model page's summary of the case key sets (capital letters, sentence starts; see `caseclasses`)."""

from __future__ import annotations

from dataclasses import dataclass

from .caseclasses import DESCRIPTIONS
from .pages import head_file


@dataclass(frozen=True)
class CaseRow:
    """The model page's line for one case key set: its strongest head on held-out text (by the mass above the
    strictest null) and that head's summary."""

    description: str
    head: str
    page: str
    s: object  # results.Summary (held-out)


def case_rows(m) -> list[CaseRow]:
    """Per case key set a model was scored on, its strongest head on held-out text (`results.ModelResult` m)."""
    out = []
    for name, description in DESCRIPTIONS.items():
        if not m.heads or name not in m.heads[0].detectors:
            continue
        gain = lambda h: h.summary(name).gain
        best = max(m.heads, key=lambda h: gain(h) if gain(h) is not None and gain(h) == gain(h) else -1.0)
        out.append(CaseRow(description.removeprefix("attention mass on "), best.name, head_file(m, best.name),
                           best.summary(name)))
    return out
