"""Run configuration: CLI arguments over an optional TOML file over the defaults."""

from __future__ import annotations

import sys
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from .errors import ReportgenError

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODELS = ROOT / "inputs" / "models"
DEFAULT_TOML = ROOT / "inputs" / "reportgen.toml"
TEMPLATE_DIRS = (ROOT / "templates", Path(sys.prefix) / "share" / "reportgen" / "templates")


def template_dir() -> Path:
    """The folder holding the *.html.jinja2 templates and CSS (source tree, else the installed copy)."""
    for d in TEMPLATE_DIRS:
        if (d / "base.html.jinja2").exists():
            return d
    raise ReportgenError("reportgen templates not found (reinstall the package)")


@dataclass(frozen=True)
class ModelSpec:
    """One model to analyse: checkpoint, display label, language, and optional user text."""

    path: Path
    label: str
    language: str | None = None
    text: Path | None = None
    heldout: Path | None = None
    with_residuals: bool = True
    train_text: Path | None = None


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's numbers and output."""

    models: tuple[ModelSpec, ...]
    out: Path = Path("site")
    seed: int = 0
    train_windows: int = 256
    heldout_windows: int | None = None  # None = every held-out window
    n_probes: int = 64
    ablation_windows: int = 64  # held-out windows for head ablation (0 = skip the causal stage)
    control_windows: int = 64  # windows for the random-init and shuffled-text controls
    timeline_windows: int = 64  # held-out windows per sibling checkpoint for the emergence timeline (0 = skip)
    batch_size: int = 32
    oov: str = "error"
    pdf: bool = True
    class_overrides: dict = field(default_factory=dict)

    def fingerprint(self) -> dict:
        """The settings that change the numbers (for results.json and the cache)."""
        return {"seed": self.seed, "train_windows": self.train_windows, "heldout_windows": self.heldout_windows,
                "n_probes": self.n_probes, "oov": self.oov, "class_overrides": self.class_overrides,
                "ablation_windows": self.ablation_windows, "control_windows": self.control_windows,
                "timeline_windows": self.timeline_windows}


def latest_checkpoint(folder: Path) -> Path:
    """The highest-step reportgen checkpoint (stepNNNNN.pt) in a folder."""
    found = sorted(folder.glob("step*.pt"))
    if not found:
        raise ReportgenError(f"{folder}: no shipped checkpoints (step*.pt); train them with `reportgen train`")
    return found[-1]


def default_models() -> tuple[ModelSpec, ...]:
    """The shipped English and Hebrew models (their final checkpoints)."""
    return (ModelSpec(latest_checkpoint(DEFAULT_MODELS / "en"), "English", "en"),
            ModelSpec(latest_checkpoint(DEFAULT_MODELS / "he"), "Hebrew", "he"))


def read_toml(path: Path) -> dict:
    """Settings from a TOML file; errors name the file."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ReportgenError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ReportgenError(f"{path}: invalid TOML ({exc})") from None
    known = {f.name for f in fields(RunConfig)} | {"model"}
    unknown = set(data) - known
    if unknown:
        raise ReportgenError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
    return data


def _spec(entry: dict, source: str) -> ModelSpec:
    """A ModelSpec from a TOML [[model]] table."""
    if "path" not in entry:
        raise ReportgenError(f"{source}: every [[model]] needs a path")
    p = lambda k: Path(entry[k]) if entry.get(k) else None
    return ModelSpec(Path(entry["path"]), entry.get("label") or Path(entry["path"]).stem, entry.get("language"),
                     p("text"), p("heldout"), bool(entry.get("with_residuals", True)), p("train_text"))


def build_config(toml: Path | None = None, **overrides) -> RunConfig:
    """Defaults, then the TOML file, then explicit (non-None) overrides such as CLI arguments."""
    values: dict = {}
    if toml is not None:
        data = read_toml(toml)
        values = {k: v for k, v in data.items() if k != "model"}
        if "model" in data:
            values["models"] = tuple(_spec(m, str(toml)) for m in data["model"])
        if "out" in values:
            values["out"] = Path(values["out"])
    values.update({k: v for k, v in overrides.items() if v is not None})
    if not values.get("models"):
        values["models"] = default_models()
    try:
        cfg = RunConfig(**values)
    except TypeError as exc:
        raise ReportgenError(f"{toml or 'arguments'}: {exc}") from None
    if cfg.oov not in ("error", "drop", "replace"):
        raise ReportgenError(f"{toml or 'arguments'}: oov must be error, drop or replace, not {cfg.oov!r}")
    labels = [m.label for m in cfg.models]
    if len(set(labels)) != len(labels):
        cfg = replace(cfg, models=tuple(replace(m, label=f"{m.label} ({i + 1})") for i, m in enumerate(cfg.models)))
    return cfg
