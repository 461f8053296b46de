"""Records of the causal stage and the emergence timeline, part of the results schema (see results.py):
ablation with targeted contrasts, controls, generation and per-role prediction changes, the agreement
between attention and ablation, and role strength across checkpoints."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .codec import optional


@dataclass(frozen=True)
class Contrast:
    """A targeted ablation contrast: Δ where the role should matter vs elsewhere, with a paired CI, and its
    specificity: this head's difference minus the median other head's difference (window by window)."""

    delta_target: float
    delta_rest: float
    difference: float
    ci_low: float
    ci_high: float
    windows: int
    specificity: float | None = optional()
    specificity_ci_low: float | None = optional()
    specificity_ci_high: float | None = optional()


def standout(c: Contrast | None) -> bool:
    """The rule for "specific": the raw contrast's 95% CI lies above 0 and so does the paired difference from the
    median other head's contrast."""
    return (c is not None and c.ci_low > 0 and c.specificity_ci_low is not None
            and math.isfinite(c.specificity_ci_low) and c.specificity_ci_low > 0)


@dataclass(frozen=True)
class Ablation:
    """One head ablated: Δ bits/char with CI (`mode`: resample, or mean in older results), per predicted class,
    targeted contrasts and per-class contrasts (is one predicted class where the head matters most?), the loss of
    the ablated model, and a second ablation mode's Δ with its CI."""

    layer: int
    head: int
    head_name: str
    delta_bits_per_char: float
    ci_low: float
    ci_high: float
    by_target_class: dict[str, float]
    targeted: dict[str, Contrast]
    mode: str | None = optional()
    ablated_bits_per_char: float | None = optional()
    class_contrasts: dict[str, Contrast] = field(default_factory=dict)
    second_mode: str | None = optional()
    second_delta: float | None = optional()
    second_ci_low: float | None = optional()
    second_ci_high: float | None = optional()


@dataclass(frozen=True)
class Writes:
    """What one head writes (direct logit attribution on held-out windows): the rank among the vocabulary of the
    character at its strongest key (1 = the character it raises most), the share of queries where that character
    is its top-1, the same share for another query's character (null) and the lower CI bound of the difference;
    the same for the character after the strongest key; the mean direct logit per class; the verdict:
    'copies', 'next' (raises what followed what it reads), 'class' (raises `top_class`) or 'none'."""

    layer: int
    head: int
    head_name: str
    windows: int
    vocab: int
    copy_rank: float
    copy_top1: float
    copy_null: float
    copy_ci_low: float
    copy_ci_high: float
    next_top1: float
    next_ci_low: float
    class_logits: dict[str, float]
    top_class: str | None
    top_class_ci_low: float | None
    verdict: str


@dataclass(frozen=True)
class Edge:
    """Composition: the change in a later head's role score when one earlier head is resample-ablated."""

    source: str  # "L0H1"
    target: str  # "L3H2"
    detector: str  # the target head's role detector whose score is measured
    clean: float
    ablated: float
    chance: float
    cut: float  # (clean - ablated) / (clean - chance): the share of the role's excess over chance removed
    ci_low: float  # 95% CI of (clean - ablated) over windows
    ci_high: float
    edge: bool  # cut >= 1/2 and ci_low > 0


@dataclass(frozen=True)
class Circuit:
    """Every (earlier head -> role head) composition measured, on `windows` held-out windows with `draws` donors."""

    windows: int
    draws: int
    targets: list[str]
    measured: list[Edge]

    @property
    def edges(self) -> list[Edge]:
        return [e for e in self.measured if e.edge]


@dataclass(frozen=True)
class SeedRole:
    """One head's replicated role in one training seed, with that head's resample-ablation Δ (bits/char, 95% CI),
    whether removing it breaks the model (ablated loss no better than the unigram model), and what it writes."""

    layer: int
    head: int
    role: str
    family: str
    pattern: str
    primary: bool
    effect: float  # held-out mean minus the strictest null
    delta: float | None = optional()
    delta_ci_low: float | None = optional()
    delta_ci_high: float | None = optional()
    breaks: bool = False
    writes: str | None = optional()  # copies / next / class / none (role heads of models with residuals)


@dataclass(frozen=True)
class Seed:
    """One training seed of a model's recipe, measured with the run's detectors, nulls, replication, copying
    probe and resample ablation (`drawn`: the seed whose pages and figures are drawn)."""

    label: str  # "seed 1"
    seed: int | None  # the training seed the checkpoint records
    checkpoint: str  # display path
    sha256: str
    drawn: bool
    bits_per_char: float  # held-out, on the ablation windows (or every held-out window without ablation)
    ci_low: float | None
    ci_high: float | None
    unigram_bits_per_char: float
    roles: list[SeedRole]
    copy_first: float | None  # repeated held-out passages: bits/char on the first and on later copies
    copy_later: float | None
    copy_ci_low: float | None  # 95% CI of first minus later (the copying gain)
    copy_ci_high: float | None
    heads_that_matter: int | None  # heads whose resample-ablation CI lies above 0
    edges: list[str] = field(default_factory=list)  # composition edges "L0H1 -> L3H2" (the drawn seed only)


@dataclass(frozen=True)
class ControlResult:
    """Roles and discoveries on one control (random-init model or shuffled text).

    The random-init control is drawn several times (`draws`, one record each); its own fields then pool the
    draws: roles found in any draw (each tagged with its draw), tests and discoveries summed, scale and
    entropy the median over draws, and `max_effect` the high end over draws (the ceiling trained roles meet)."""

    positional_roles: list[str]
    content_roles: list[str]
    tests: int
    discoveries_q05: int
    max_effect: dict[str, float] = field(default_factory=dict)  # detector -> strongest effect over the heads
    scale: float | None = optional()  # random-init control: factor on the query weights matching sharpness
    median_entropy: float | None = optional()
    draws: list[ControlResult] | None = optional()  # random-init control: each draw (absent: a single draw)

    @property
    def n_draws(self) -> int:
        """How many random models the ceiling is taken over (1 for results from before draws were kept)."""
        return len(self.draws) if self.draws else 1

    @property
    def draws_with_roles(self) -> int:
        """How many draws were given at least one role."""
        runs = self.draws or [self]
        return sum(bool(d.positional_roles or d.content_roles) for d in runs)


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
    """One role's held-out strength at every checkpoint of the timeline, with its detector's uniform-chance value;
    `significant_from`: the first step from which the lower 95% bound of its excess over its strictest null
    (uniform chance, or the positional, label-swap or word-structure null where the detector has them) stays
    above 0 (`timeline.assemble`, `phases.significant_from`)."""

    label: str
    detector: str
    layer: int
    head: int
    chance: float | None
    mean: list[float]
    ci_low: list[float]
    ci_high: list[float]
    significant_from: int | None = optional()
    leaves_chance: bool | None = optional()  # False: its lower bound is above chance at no checkpoint (not drawn)


@dataclass(frozen=True)
class PhaseChange:
    """Between two checkpoints, the in-context-learning score and at least one role jump together (`phases.py`)."""

    step_before: int
    step: int
    icl_drop: float  # fall of the score (`score`), bits/char
    roles: list[str]
    score: str | None = optional()  # which in-context score fell: "in-context-learning score" or "copying score"


@dataclass(frozen=True)
class Timeline:
    steps: list[int | None]
    heldout_bits_per_char: list[float | None]  # recorded by reportgen's training on its held-out text
    windows: int
    series: list[Series]
    recorded_bits_per_char: list[float | None] | None = optional()  # another trainer's recorded loss, in bits/char
    recorded: str | None = optional()  # what that loss is (e.g. "training loss"), when any is recorded
    bits_per_char: list[float] | None = optional()  # measured on the timeline's held-out windows
    icl: list[float] | None = optional()  # in-context-learning score: late minus early loss (bits/char), with its CI
    icl_ci_low: list[float] | None = optional()
    icl_ci_high: list[float] | None = optional()
    icl_late: list[int] | None = optional()  # [first, last] query position of the late and early loss
    icl_early: list[int] | None = optional()
    copying: list[float] | None = optional()  # copying score: second-copy minus first-copy loss on repeated passages
    copying_ci_low: list[float] | None = optional()
    copying_ci_high: list[float] | None = optional()
    copying_period: int | None = optional()  # characters per copy
    icl_from: int | None = optional()  # first step from which the score's upper 95% bound stays below 0
    copying_from: int | None = optional()
    phase_changes: list[PhaseChange] | None = optional()
    phase_rule: str | None = optional()  # the rule that marks them (phases.RULE)


@dataclass(frozen=True)
class CharProfile:
    """The per-character profile behind a class role (held-out): key characters as (character, mass, chance),
    mass = the head's mean attention on that character, chance = its mean under uniform causal attention."""

    detector: str
    top: list[tuple[str, float, float]]  # the characters with the most mass above their chance, any class
    members: list[tuple[str, float, float]]  # the class's frequent members, highest mass / chance first
    letter_lift: float | None = optional()  # the class's share of letter mass over its share by chance
    wide_lift: float | None = optional()  # the same without its most preferred members (`catalogue.WIDE_DROP`)
    wide_lift_ci_low: float | None = optional()
    members_above: float | None = optional()  # frequent members above their own share by chance
    members_frequent: float | None = optional()


@dataclass(frozen=True)
class DistanceProfile:
    """A role's attention on its target by how far back the target is (offsets "0" = the query itself, "1" = the
    previous character, ..., "5+"), pooled over held-out windows; for a class role the target is the nearest
    key of the class before the query."""

    detector: str
    offsets: list[str]
    mass: list[float]  # mean mass on the target of the queries whose target is that far back (NaN: none)
    queries: list[float]  # share of the queries with a target at each offset
    share: list[float]  # share of the role's target mass from each offset
