"""Records of the causal stage and the emergence timeline, part of the results schema (see results.py):
ablation with targeted contrasts, controls, generation and per-role prediction changes, the agreement
between attention and ablation, and role strength across checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field

from .codec import optional


@dataclass(frozen=True)
class Contrast:
    """A targeted ablation contrast: Δ where the role should matter vs elsewhere, with a paired CI, and its
    specificity: this head's difference minus the mean difference over all heads (window by window)."""

    delta_target: float
    delta_rest: float
    difference: float
    ci_low: float
    ci_high: float
    windows: int
    specificity: float | None = optional()
    specificity_ci_low: float | None = optional()
    specificity_ci_high: float | None = optional()


@dataclass(frozen=True)
class Ablation:
    """One head mean-ablated: Δ bits/char with CI, per predicted class, and targeted contrasts."""

    layer: int
    head: int
    head_name: str
    delta_bits_per_char: float
    ci_low: float
    ci_high: float
    by_target_class: dict[str, float]
    targeted: dict[str, Contrast]


@dataclass(frozen=True)
class ControlResult:
    """Roles and discoveries on one control (random-init model or shuffled text)."""

    positional_roles: list[str]
    content_roles: list[str]
    tests: int
    discoveries_q05: int
    max_effect: dict[str, float] = field(default_factory=dict)  # detector -> strongest effect over the heads
    scale: float | None = optional()  # random-init control: factor on the query weights matching sharpness
    median_entropy: float | None = optional()


@dataclass(frozen=True)
class Controls:
    random_init: ControlResult
    shuffled_text: ControlResult
    windows: int
    trained_median_entropy: float | None = optional()


@dataclass(frozen=True)
class Generation:
    """Samples with and without the strongest role heads, and the per-character loss change on a passage."""

    prompt: str
    heads: list[str]
    full: str
    ablated: str
    passage_delta: list[tuple[str, float]] = field(default_factory=list)
    temperature: float | None = optional()
    top_k: int | None = optional()


@dataclass(frozen=True)
class Prediction:
    """One next-character prediction with and without a head: the context, the true next character, its
    probability before and after, and the top 3 candidates before and after."""

    position: int  # index in the passage of the predicted character
    context: str  # up to 16 characters ending at the one read last
    actual: str
    p_before: float
    p_after: float
    top_before: list[tuple[str, float]]
    top_after: list[tuple[str, float]]


@dataclass(frozen=True)
class WorkedExample:
    """One query of a held-out passage where a role head puts the most attention on its role's target."""

    query: int  # position of the character being read
    char: str
    context: str  # up to 25 characters ending at the query
    target_mass: float  # the head's attention on its target set from this query
    keys: list[tuple[int, str, float, bool]]  # its three strongest keys: (position, character, weight, in target)
    row: list[float] = field(default_factory=list)  # its attention on every key 0..query (for shaded text)


@dataclass(frozen=True)
class RoleEffect:
    """The predictions on a short held-out passage that one role head's removal changes most."""

    layer: int
    head: int
    head_name: str
    role: str
    passage: str
    predictions: list[Prediction]
    example: WorkedExample | None = None


@dataclass(frozen=True)
class CausalAgreement:
    """Spearman ρ between attention-based strength and ablation Δ over heads, with a bootstrap CI."""

    spearman_rho: float
    ci_low: float
    ci_high: float
    heads: int
    x: str
    y: str
    degenerate: float | None = optional()  # share of head resamples without variation (counted as ρ = 0)


@dataclass(frozen=True)
class Series:
    """One role's held-out strength at every checkpoint of the timeline."""

    label: str
    detector: str
    layer: int
    head: int
    chance: float | None
    mean: list[float]
    ci_low: list[float]
    ci_high: list[float]


@dataclass(frozen=True)
class Timeline:
    steps: list[int | None]
    heldout_bits_per_char: list[float | None]
    windows: int
    series: list[Series]
