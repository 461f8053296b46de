"""Seeds of one recipe: each measured like the drawn model, roles matched across seeds by what they are.

A model may come with other training seeds of its recipe (`ModelSpec.seeds`). Each is captured and scored with
the run's detectors, nulls and held-out replication (its tests join the run's FDR family), its copying probe
and a resample ablation of every head; `measure` turns that into a compact `Seed` record. The drawn seed (whose
pages and figures are drawn) gets the same record from its full analysis (`record`).

Head numbering is arbitrary between seeds, so nothing here matches heads by index: a role recurs in a seed when
any head of that seed has it (replicated), and its layers are the set of layers holding it. Every count below
is therefore invariant to a permutation of the heads within a layer.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from .config import SEED_FOLDER, display_path
from .languages import shown
from .evidence import Ablation, Seed, SeedRole, Writes
from .stats import bootstrap_ci

if TYPE_CHECKING:
    from .config import RunConfig
    from .stages import ModelAnalysis


def seed_label(a: "ModelAnalysis", fallback: int) -> tuple[str, int | None]:
    """("seed N", N) from the training seed the checkpoint records, else from a `seedN` folder, else `fallback`."""
    recorded = a.prep.bundle.metadata.get("seed")
    if isinstance(recorded, int) and not isinstance(recorded, bool):
        return f"seed {recorded}", recorded
    for part in reversed(a.prep.bundle.path.parts):
        m = SEED_FOLDER.fullmatch(part)
        if m:
            return f"seed {int(m[1])}", int(m[1])
    return f"seed #{fallback}", None


def copying(a: "ModelAnalysis", rng: np.random.Generator) -> tuple[float, float, float, float] | None:
    """(first-copy bits/char, later-copies bits/char, CI of first minus later) on repeated held-out passages."""
    p = a.probes.get("probe_natural")
    if p is None or len(p.loss_first) < 2:
        return None
    gain = (p.loss_first - p.loss_repeat)[:, None]
    lo, hi, _ = bootstrap_ci(gain, rng)
    return float(p.loss_first.mean()), float(p.loss_repeat.mean()), float(lo[0]), float(hi[0])


def record(a: "ModelAnalysis", label: str, seed: int | None, drawn: bool, baseline: float,
           baseline_ci: tuple[float, float] | None, unigram: float, ablation: list[Ablation],
           writes: list[Writes], rng: np.random.Generator, edges: list[str] = ()) -> Seed:
    """A seed's record: its replicated roles (each head's Δ and what it writes), loss, copying and counts."""
    by_head = {(x.layer, x.head): x for x in ablation}
    wrote = {(w.layer, w.head): w.verdict for w in writes}
    roles = []
    for f in a.findings:
        if not f.replicated:
            continue
        x = by_head.get((f.layer, f.head))
        roles.append(SeedRole(f.layer, f.head, f.role, f.family, f.pattern, f.primary, f.effect,
                              x.delta_bits_per_char if x else None, x.ci_low if x else None,
                              x.ci_high if x else None,
                              bool(x and x.ablated_bits_per_char is not None and x.ablated_bits_per_char >= unigram
                                   and baseline < unigram),
                              wrote.get((f.layer, f.head))))
    cp = copying(a, rng)
    bundle = a.prep.bundle
    return Seed(label, seed, display_path(bundle.path), bundle.sha256, drawn, baseline,
                baseline_ci[0] if baseline_ci else None, baseline_ci[1] if baseline_ci else None, unigram, roles,
                *(cp if cp else (None, None, None, None)),
                sum(x.ci_low > 0 for x in ablation) if ablation else None, list(edges))


def measure(a: "ModelAnalysis", cfg: "RunConfig", index: int, label: str, seed: int | None, unigram: float,
            progress, first=None) -> Seed:
    """An extra seed's causal summary: every head resample-ablated on the run's ablation windows (`first`, from
    `ablation.ablate_model`, measured here if not given; no mean column, second-copy contrast, controls, generation
    or composition: its record keeps each head's Δ and CI), what its role heads write, and its record."""
    from .ablation import ablate_model
    from .writes import head_writes

    prep = a.prep
    bundle = prep.bundle
    rng = np.random.default_rng([cfg.seed, index, 11])
    ablation, writes, ci = [], [], None
    if cfg.ablation_windows:
        first = first or ablate_model(prep, a.stats, cfg, index, progress, seed=True)
        baseline, ablation, ci, rng = first.baseline, first.heads, first.baseline_ci or None, first.rng
        windows = first.windows
        heads = sorted({(f.layer, f.head) for f in a.findings if f.primary})  # as for the drawn seed
        writes = head_writes(bundle.model, windows[:, :-1], prep.classes, heads, rng)
    else:
        from .loader import bits

        baseline = bits(bundle.model, prep.ids["heldout"])
    return record(a, label, seed, False, baseline, ci, unigram, ablation, writes, rng)


def records(a: "ModelAnalysis", causal, measured: list[Seed], seed: int, unigram: float) -> list[Seed]:
    """The drawn seed's record (from its full analysis and causal stage `causal`, if any) followed by the other
    seeds' (`measure`); two checkpoints recording the same seed are told apart by file name."""
    from pathlib import Path

    label, number = seed_label(a, 0)
    rng = np.random.default_rng([seed, 0, 13])
    if causal is not None:
        drawn = record(a, label, number, True, causal.baseline, causal.baseline_ci, unigram, causal.heads,
                       causal.writes, rng, [f"{e.source} -> {e.target}" for e in
                                            (causal.circuit.edges if causal.circuit else [])])
    else:
        from .loader import bits

        drawn = record(a, label, number, True, bits(a.prep.bundle.model, a.prep.ids["heldout"]), None, unigram,
                       [], [], rng)
    out = [drawn, *measured]
    labels = [s.label for s in out]
    return [s if labels.count(s.label) == 1 else replace(s, label=f"{s.label} ({Path(s.checkpoint).name})")
            for s in out]


# ---- recurrence -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recurrence:
    """One role across a model's seeds: per seed, how many heads hold it and in which layers, and the strongest
    such head's held-out effect and resample Δ (None where the seed lacks the role)."""

    role: str
    family: str
    seeds: int  # n: seeds measured
    counts: tuple[int, ...]  # per seed, heads with the role (replicated, main role or not)
    layers: tuple[tuple[int, ...], ...]  # per seed, the layers holding it
    effects: tuple[float | None, ...]
    deltas: tuple[float | None, ...]
    writes: tuple[str | None, ...]  # per seed, what the strongest such head writes
    breaks: tuple[bool, ...] = ()  # per seed, whether removing that head breaks the model (Δ measures breakage)

    @property
    def present(self) -> int:
        """k: seeds where some head holds the role."""
        return sum(c > 0 for c in self.counts)

    @property
    def everywhere(self) -> bool:
        return self.present == self.seeds

    @property
    def same_layers(self) -> bool:
        """Every seed holding the role holds it in the same set of layers."""
        held = {ls for ls in self.layers if ls}
        return len(held) == 1

    def spread(self, values: tuple[float | None, ...]) -> tuple[float, float] | None:
        got = [v for v in values if v is not None]
        return (min(got), max(got)) if got else None


def recurrence(seeds: list[Seed]) -> list[Recurrence]:
    """Every role replicated in any seed, most widespread first (then by name)."""
    names: dict[str, str] = {}
    for s in seeds:
        for r in s.roles:
            names.setdefault(r.role, r.family)
    out = []
    for role, fam in names.items():
        counts, layers, effects, deltas, writes, broken = [], [], [], [], [], []
        for s in seeds:
            mine = [r for r in s.roles if r.role == role]
            counts.append(len({(r.layer, r.head) for r in mine}))
            layers.append(tuple(sorted({r.layer for r in mine})))
            best = max(mine, key=lambda r: (r.effect, -r.layer), default=None)
            effects.append(best.effect if best else None)
            deltas.append(best.delta if best else None)
            writes.append(best.writes if best else None)
            broken.append(bool(best and best.breaks))
        out.append(Recurrence(role, fam, len(seeds), tuple(counts), tuple(layers), tuple(effects), tuple(deltas),
                              tuple(writes), tuple(broken)))
    return sorted(out, key=lambda r: (-r.present, r.role))


def family_counts(seeds: list[Seed], family: str) -> tuple[int, ...]:
    """Per seed, heads whose main role belongs to `family` (each head counted once, as in the question on
    pattern types)."""
    return tuple(sum(r.primary and r.family == family for r in s.roles) for s in seeds)


def heads_with_roles(seeds: list[Seed]) -> tuple[int, ...]:
    """Per seed, heads with a replicated main role."""
    return tuple(sum(r.primary for r in s.roles) for s in seeds)


def apart(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """+1 when every seed of a has more than every seed of b, -1 the other way round, 0 when the ranges meet
    (a difference between two models holds only when it holds for every pair of their seeds)."""
    if a and b and min(a) > max(b):
        return 1
    if a and b and min(b) > max(a):
        return -1
    return 0


# ---- words ----------------------------------------------------------------------------------------


def counts_or_drawn(m) -> tuple[int, ...]:
    """Heads with a replicated main role per seed (just the drawn model's count without seeds)."""
    return heads_with_roles(m.seeds) if len(m.seeds) > 1 else (len(m.primary),)


def fam_counts(m, family: str) -> tuple[int, ...]:
    """Per seed, heads whose main role is in `family` (the drawn model alone without seeds)."""
    return family_counts(m.seeds, family) if len(m.seeds) > 1 else (sum(f.family == family for f in m.primary),)


def copies(s: Seed) -> bool | None:
    """Whether a seed predicts a repeated passage better the second time (the gain's CI above 0)."""
    return None if s.copy_ci_low is None else s.copy_ci_low > 0


def compare_counts(models, counts) -> str:
    """How per-seed counts of two models compare: 'holds in every seed', 'ranges overlap …', or '' when a model
    has one seed (nothing to say about seeds)."""
    if len(models) != 2 or any(len(m.seeds) < 2 for m in models):
        return ""
    a, b = (counts(m) for m in models)
    side = apart(a, b)
    if side:
        more = models[0] if side > 0 else models[1]
        return f"more in {shown(more.label)} in every pair of seeds: a difference that holds across seeds"
    if len(set(a) | set(b)) == 1:
        return "the same in every seed"
    return "the seeds' ranges overlap: not a difference between the models"


def role_presence(models) -> list[tuple[str, list[tuple[int, int]], str]]:
    """Roles whose presence differs between two models measured on several seeds: (role, [(k, n) per model],
    verdict); the verdict says 'holds in every seed' only when one model has the role in every seed and the other
    in none."""
    if len(models) != 2 or any(len(m.seeds) < 2 for m in models):
        return []
    recs = [{r.role: r for r in recurrence(m.seeds)} for m in models]
    out = []
    for role in sorted(set(recs[0]) | set(recs[1])):
        kn = [((recs[i][role].present if role in recs[i] else 0), len(models[i].seeds)) for i in (0, 1)]
        if kn[0][0] / kn[0][1] == kn[1][0] / kn[1][1]:
            continue
        full = [i for i in (0, 1) if kn[i][0] == kn[i][1] and kn[1 - i][0] == 0]
        verdict = (f"only in {shown(models[full[0]].label)}, in every seed: a difference that holds across seeds" if full else
                   "found in some seeds only: not a difference between the models")
        out.append((role, kn, verdict))
    return out


def family_rows(models) -> list[tuple[str, list[str], str]]:
    """Two models measured on several seeds: per compared family, each model's heads per seed ('4 / 1 / 6') and
    whether the difference holds across seeds."""
    from .catalogue import FAMILIES

    if len(models) != 2 or any(len(m.seeds) < 2 for m in models):
        return []
    rows = []
    for fam in FAMILIES:
        counts = [fam_counts(m, fam.name) for m in models]
        if fam.compared and any(any(c) for c in counts):
            rows.append((fam.name, [" / ".join(map(str, c)) for c in counts],
                         compare_counts(models, lambda m, f=fam.name: fam_counts(m, f))))
    return rows


def only_seeds(models, i: int, family: str) -> str:
    """For a family found in one model's drawn seed only: in how many seeds of each model it is found, and whether
    the difference holds in every seed."""
    if any(len(m.seeds) < 2 for m in models):
        return " (not measured on several seeds: not yet a property of the models)"
    k = [sum(c > 0 for c in fam_counts(m, family)) for m in models]
    n = [len(m.seeds) for m in models]
    holds = k[i] == n[i] and k[1 - i] == 0
    return (f" (in {k[i]} of {n[i]} seeds of {shown(models[i].label)}, {k[1 - i]} of {n[1 - i]} of {shown(models[1 - i].label)}: "
            + ("holds in every seed)" if holds else "not a difference in every seed)"))
