"""Methods tables without repetition: rows that differ only in a detector's number (offset_2 … offset_8) or only in
its name (the class detectors' identical rules) are shown as one row, so the PDF's Methods chapter stays short."""

from __future__ import annotations

import re

NUMBERED = re.compile(r"^(.*)_(\d+)$")


def _k(text: str, n: str) -> str:
    """`text` with the number `n` written as k where it stands alone (not inside 0.05, 95% or 2019)."""
    return re.sub(rf"(?<![\d.]){n}(?![\d.%])", "k", text)


def _key(row: tuple, name: int, texts: tuple[int, ...]) -> tuple:
    m = NUMBERED.match(row[name])
    if m:  # every other column must agree too (offset_0's role is not "offset-k head")
        return ("numbered", m.group(1), tuple(_k(v, m.group(2)) for c, v in enumerate(row) if c != name))
    return ("same", None, tuple(row[c] for c in texts))


def group_rows(rows, name: int, texts: tuple[int, ...]) -> list[tuple[str, ...]]:
    """Rows (tuples of strings) with neighbours merged: a run of detectors `<stem>_<n>` whose `texts` columns agree
    once n is written as k becomes one row (`<stem>_k (k = first–last)`, its other columns with k for n); a run of
    rows whose `texts` columns are equal becomes one row with the other columns joined by commas. Order is kept."""
    groups: list[list[tuple]] = []
    for row in map(tuple, rows):
        if groups and _key(groups[-1][-1], name, texts) == _key(row, name, texts):
            groups[-1].append(row)
        else:
            groups.append([row])
    out = []
    for g in groups:
        kind, stem, _ = _key(g[0], name, texts)
        if len(g) == 1:
            out.append(g[0])
        elif kind == "numbered":
            n = [int(NUMBERED.match(r[name]).group(2)) for r in g]
            span = f"{n[0]}–{n[-1]}" if n == list(range(n[0], n[-1] + 1)) else ", ".join(map(str, n))
            out.append(tuple(f"{stem}_k (k = {span})" if c == name else _k(v, str(n[0])) for c, v in enumerate(g[0])))
        else:
            out.append(tuple(v if c in texts else ", ".join(dict.fromkeys(r[c] for r in g)) for c, v in enumerate(g[0])))
    return out
