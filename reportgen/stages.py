"""Values passed between stages (no logic): a loaded model, one model's analysis, figure inputs.

They sit below analyze, ablation and timeline so those modules import this one, never each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .capture import HeadScores, ProbeScores
    from .checkpoint import ModelBundle
    from .classes import CharClasses
    from .config import ModelSpec
    from .corpora import TextSplit
    from .results import Finding, ModelResult
    from .stats import SplitStats

Example = tuple[str, str, np.ndarray]  # (caption, text, attention (L, H, T, T))


@dataclass(frozen=True)
class Prepared:
    """A model whose inputs are loaded and checked, ready for capture."""

    spec: ModelSpec
    bundle: ModelBundle
    split: TextSplit
    classes: CharClasses
    ids: dict[str, np.ndarray]  # split -> token ids
    sources: dict[str, str]  # split -> where the text came from (for error messages)
    seeds: tuple["Prepared", ...] = ()  # other seeds of the same recipe, on the same text
    oov_share: dict[str, float] = field(default_factory=dict)  # split -> share of characters dropped or replaced

    def heldout_start(self, n_chars: int = 4000) -> str:
        """The start of the held-out text as the model reads it (after the out-of-vocabulary policy)."""
        return self.bundle.tokenizer.detokenize(self.ids["heldout"][:n_chars].tolist())


@dataclass(frozen=True)
class ModelAnalysis:
    """Everything measured for one model before it becomes a `ModelResult`."""

    prep: Prepared
    scores: dict[str, HeadScores]
    probes: dict[str, ProbeScores]  # held-out probes
    stats: dict[str, SplitStats]
    head_distance: np.ndarray  # (L*H, L*H) Jensen–Shannon distance between heads
    clusters: list[list[str]]
    examples: tuple[Example, ...]
    findings: list[Finding] = field(default_factory=list)


@dataclass(frozen=True)
class FigureInputs:
    """The arrays a model's figures need beyond results.json (saved so rendering can run without analysis)."""

    label: str
    language: str
    examples: tuple[Example, ...]
    mean_attn: np.ndarray  # (L, H, T, S) held-out mean attention
    class_matrix: np.ndarray  # (L, H, C, C)
    class_chance: np.ndarray  # (C, C)
    class_count: np.ndarray  # (C,)


@dataclass(frozen=True)
class Analysed:
    """What the analysis stage hands on: the typed results, per-window values for diffs, figure inputs."""

    models: list[ModelResult]
    windows: dict[str, dict[str, np.ndarray]]  # model label -> detector -> (W, L, H); '__starts__' -> (W,)
    figure_inputs: list[FigureInputs]
    stages: dict[str, float] = field(default_factory=dict)  # seconds per analysis stage, summed over models
