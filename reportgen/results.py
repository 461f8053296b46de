"""The results schema: typed, frozen records of one run, their JSON form, and lookups.

This module alone spells results.json's keys and its schema version. A `Run` holds one
`ModelResult` per model; each holds per-head detector summaries (`HeadResult`), the roles
discovered on training text (`Finding`) and the causal evidence (`Ablation`, `Controls`,
`Generation`, `CausalAgreement`, `Timeline`; their records live in evidence.py). `Run.to_json` /
`Run.from_json` are the only way in or out; the output folder's files are owned by
`outputs.OutputFolder`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .catalogue import FAMILIES, run_detectors
from .codec import decode, encode, optional
from .errors import ReportgenError
from .evidence import Ablation, CausalAgreement, Circuit, Controls, Edge, Generation, RoleEffect, Seed, Timeline, Writes
from .evidence import CharProfile, DistanceProfile
from .modelcard import ModelCard
from .querychars import QueryChars

SCHEMA_VERSION = 3
SPLITS = ("train", "heldout")


@dataclass(frozen=True)
class Summary:
    """One detector on one split for one head: mean, chance, CI and (for tested detectors) nulls and tests."""

    mean: float
    chance: float
    ci_low: float
    ci_high: float
    bca: float  # 1 if the BCa interval was used, 0 for percentile
    times_chance: float  # ratio of sums
    p_uniform: float | None = optional()
    positional: float | None = optional()
    p_positional: float | None = optional()
    swap: float | None = optional()
    p_swap: float | None = optional()
    structure: float | None = optional()  # class detectors: mass explained by word-start and boundary keys
    p_structure: float | None = optional()
    p: float | None = optional()
    consistency: float | None = optional()
    gain: float | None = optional()
    gain_ci_low: float | None = optional()
    gain_ci_high: float | None = optional()
    lift: float | None = optional()  # ratio of sums: observed / the stricter of the positional and label-swap nulls
    lift_ci_low: float | None = optional()
    q: float | None = optional()
    letter_lift: float | None = optional()  # letter classes: the class-wide gate (classwide.class_wide_fields)
    wide_lift: float | None = optional()
    wide_lift_ci_low: float | None = optional()
    members_above: float | None = optional()
    members_frequent: float | None = optional()
    members_share: float | None = optional()

    def values(self) -> dict[str, float]:
        """The fields that apply, as a plain dict (what role rules read)."""
        return {k: v for k, v in vars(self).items() if v is not None}

    @property
    def strictest_null(self) -> float:
        """The largest of uniform chance and the positional and label-swap nulls that apply."""
        return max((v for v in (self.chance, self.positional, self.swap, self.structure)
                    if v is not None and math.isfinite(v)), default=math.nan)


@dataclass(frozen=True)
class FindingBlock:
    """A finding's numbers on one split (a subset of the head's `Summary`)."""

    mean: float
    chance: float
    ci_low: float
    ci_high: float
    p: float | None = optional()
    q: float | None = optional()
    consistency: float | None = optional()
    times_chance: float | None = optional()
    positional: float | None = optional()
    swap: float | None = optional()
    structure: float | None = optional()
    gain: float | None = optional()
    gain_ci_low: float | None = optional()
    gain_ci_high: float | None = optional()
    lift: float | None = optional()
    lift_ci_low: float | None = optional()

    @classmethod
    def of(cls, s: Summary) -> "FindingBlock":
        """The finding's view of a summary."""
        return cls(**{k: getattr(s, k) for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class HeadResult:
    """Every detector's summary for one head on both splits, and the roles whose rules hold."""

    layer: int
    head: int
    detectors: dict[str, dict[str, Summary]]  # detector -> split -> summary
    roles: dict[str, list[str]]  # split -> role labels
    char_profile: CharProfile | None = optional()  # held-out, behind a class role (or a class rule failing only
    # the class-wide gate)
    distance_profiles: dict[str, DistanceProfile] | None = optional()  # held-out, word-structure and class roles
    query_chars: QueryChars | None = optional()  # held-out attention by query character (querychars.py)

    @property
    def name(self) -> str:
        return f"L{self.layer}H{self.head}"

    def summary(self, detector: str, split: str = "heldout") -> Summary:
        return self.detectors[detector][split]


@dataclass(frozen=True)
class Finding:
    """A role discovered on training windows, with its held-out confirmation."""

    layer: int
    head: int
    head_name: str
    pattern: str  # detector name
    role: str
    family: str
    rule: str
    description: str
    train: FindingBlock
    heldout: FindingBlock
    replicated: bool
    effect: float  # held-out mean minus the strictest null
    primary: bool = False  # the head's main role (its strongest replicated one); others are descriptors
    by_book: dict[str, float] = field(default_factory=dict)  # held-out book -> share of its windows above the null


@dataclass(frozen=True)
class Probe:
    """A repeated-sequence probe: period, an example and the loss on first and later copies."""

    period: int
    n_probes: int
    example: str
    loss_first_copy_bits_per_char: float
    loss_later_copies_bits_per_char: float


@dataclass(frozen=True)
class ClassMatrix:
    """Mean key-class mass per query class (L, H, C, C), its uniform chance (C, C) and query counts (C,)."""

    classes: list[str]
    observed: np.ndarray
    chance: np.ndarray
    queries: np.ndarray


@dataclass(frozen=True)
class CheckpointInfo:
    path: str
    sha256: str
    format: str | None
    step: int | None
    heldout_bits_per_char_at_training: float | None
    history: Any


@dataclass(frozen=True)
class CorpusInfo:
    name: str
    description: str
    sha256: str
    train_chars: int
    heldout_chars: int
    heldout_books: list[str]
    windows: dict[str, int]
    window_length: int
    oov_share: dict[str, float] = field(default_factory=dict)  # split -> share dropped or replaced (--oov)


@dataclass(frozen=True)
class ModelResult:
    """Everything measured for one model."""

    label: str
    language: str
    checkpoint: CheckpointInfo
    hyperparameters: dict[str, Any]
    corpus: CorpusInfo
    classes: dict[str, str]  # class display name -> characters
    heads: list[HeadResult]
    findings: list[Finding]
    probes: dict[str, Probe]
    class_matrix: dict[str, ClassMatrix]
    offset_profile: dict[str, np.ndarray]  # split -> (L, H, K)
    head_distance: np.ndarray  # (L*H, L*H)
    clusters: list[list[str]]
    ablation_mode: str | None = optional()
    ablation_windows: int | None = optional()
    baseline_bits_per_char: float | None = optional()
    baseline_ci_low: float | None = optional()
    baseline_ci_high: float | None = optional()
    ablation: list[Ablation] = field(default_factory=list)
    controls: Controls | None = None
    generation: Generation | None = None
    causal_agreement: CausalAgreement | None = None
    timeline: Timeline | None = None
    role_effects: list[RoleEffect] = field(default_factory=list)
    slug: str = ""  # file-name-safe and unique within the run; pages are named after it
    writes: list[Writes] = field(default_factory=list)  # role heads: what they write (direct logit attribution)
    circuit: Circuit | None = None  # composition edges into role heads
    unigram_bits_per_char: float | None = optional()  # plug-in entropy of the held-out text's characters
    measured_bits_per_char: float | None = optional()  # the model on held-out text (the causal baseline if run)
    seeds: list[Seed] = field(default_factory=list)  # other seeds of the recipe, the drawn one first (or empty)
    card: ModelCard | None = optional()  # architecture, parameters, training, vocabulary (modelcard.py)
    case_note: str | None = optional()  # why capital letters and sentence starts are not analysed (caseclasses.py)

    def writes_of(self, layer: int, head: int) -> Writes | None:
        """What the head writes, if it was measured."""
        return next((w for w in self.writes if (w.layer, w.head) == (layer, head)), None)

    def inputs_of(self, layer: int, head: int) -> list[Edge]:
        """Earlier heads that feed this head's role (composition edges), strongest cut first."""
        name = f"L{layer}H{head}"
        edges = [e for e in self.circuit.edges if e.target == name] if self.circuit else []
        return sorted(edges, key=lambda e: -e.cut)

    @property
    def n_layers(self) -> int:
        return int(self.hyperparameters["n_layers"])

    @property
    def n_heads(self) -> int:
        return int(self.hyperparameters["n_heads"])

    def head(self, layer: int, head: int) -> HeadResult:
        """The head at (layer, head)."""
        h = self.heads[layer * self.n_heads + head]
        assert (h.layer, h.head) == (layer, head)
        return h

    def findings_at(self, layer: int, head: int, replicated_only: bool = False) -> list[Finding]:
        """The head's findings, strongest first."""
        return [f for f in self.findings if f.layer == layer and f.head == head and
                (f.replicated or not replicated_only)]

    @property
    def replicated(self) -> list[Finding]:
        """Findings that replicated on held-out text, strongest first."""
        return [f for f in self.findings if f.replicated]

    @property
    def primary(self) -> list[Finding]:
        """One replicated finding per head at most (its main role), strongest first: what counts are made of."""
        return [f for f in self.replicated if f.primary]

    def by_family(self) -> dict[str, list[Finding]]:
        """Primary replicated findings per family, in catalogue family order (families without one left out)."""
        out: dict[str, list[Finding]] = {}
        for fam in FAMILIES:
            fs = [f for f in self.primary if f.family == fam.name]
            if fs:
                out[fam.name] = fs
        return out

    def role_label(self, layer: int, head: int) -> str:
        """The head's main replicated role with its other replicated roles as descriptors, or 'no replicated role'."""
        roles = list(dict.fromkeys(f.role for f in self.findings_at(layer, head, replicated_only=True)))
        if not roles:
            return "no replicated role"
        return roles[0] + (f" (also {', '.join(roles[1:])})" if roles[1:] else "")

    def ablation_of(self, layer: int, head: int) -> Ablation | None:
        return next((a for a in self.ablation if (a.layer, a.head) == (layer, head)), None)

    def role_effect_of(self, layer: int, head: int) -> RoleEffect | None:
        return next((e for e in self.role_effects if (e.layer, e.head) == (layer, head)), None)


@dataclass(frozen=True)
class Run:
    """One reportgen run: settings, environment and every model's results."""

    generated: str
    reportgen_version: str
    environment: dict[str, str]
    settings: dict[str, Any]
    skip_queries: int
    models: list[ModelResult]

    def model(self, label: str) -> ModelResult:
        return next(m for m in self.models if m.label == label)

    def to_json(self) -> dict:
        """The results.json document (catalogue tables included for readers of the file)."""
        return {"schema_version": SCHEMA_VERSION, "generated": self.generated,
                "reportgen_version": self.reportgen_version, "environment": encode(self.environment),
                "settings": encode(self.settings), "skip_queries": self.skip_queries,
                "detectors": {d.name: d.description for d in run_detectors(self.settings)},
                "families": {d.name: d.family for d in run_detectors(self.settings)},
                "rules": [{"role": d.role, "detector": d.name, "family": d.family, "rule": d.rule.text()}
                          for d in run_detectors(self.settings) if d.rule is not None],
                "models": encode(self.models)}

    @classmethod
    def from_json(cls, doc: Any, source: str = "results.json") -> "Run":
        """Decode a results.json document; errors name `source`."""
        if not isinstance(doc, dict) or "schema_version" not in doc or "models" not in doc:
            raise ReportgenError(f"{source}: not a reportgen results.json")
        if doc["schema_version"] != SCHEMA_VERSION:
            raise ReportgenError(f"{source}: results schema version {doc['schema_version']} is incompatible "
                                 f"with this reportgen (schema {SCHEMA_VERSION}); re-run `reportgen analyze`")
        try:
            return decode(cls, {k: v for k, v in doc.items() if k in cls.__dataclass_fields__})
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ReportgenError(f"{source}: malformed results ({exc})") from None

    def normalised(self) -> "Run":
        """The run exactly as results.json will hold it (floats rounded to 6 significant digits)."""
        return Run.from_json(json.loads(json.dumps(self.to_json())))


def dumps(document: dict) -> str:
    """JSON text of a document (UTF-8, NaN refused)."""
    return json.dumps(document, indent=1, ensure_ascii=False, allow_nan=False)


def read_run(path: Path) -> Run:
    """A results.json file (or a folder holding one); errors name the file."""
    file = path / "results.json" if path.is_dir() else path
    if not file.exists():
        raise ReportgenError(f"{file}: not found")
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReportgenError(f"{file}: not valid JSON ({exc})") from None
    return Run.from_json(doc, str(file))
