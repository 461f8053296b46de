"""Run configuration: CLI arguments over an optional TOML file over the defaults."""

from __future__ import annotations

import hashlib
import re
import sys
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from .errors import ReportgenError
from .layouts import run_name

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODELS = ROOT / "inputs" / "models"
DEFAULT_TOML = ROOT / "inputs" / "reportgen.toml"
TEMPLATE_DIRS = (ROOT / "templates", Path(sys.prefix) / "share" / "reportgen" / "templates")


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def display_path(path: str | Path) -> str:
    """A path as outputs may show it: relative to the working directory when inside it, else its last two parts
    (no absolute path of the machine that built a report appears in any output)."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(Path(*path.parts[-2:])) if len(path.parts) > 1 else path.name


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
    with_residuals: bool | None = None  # None: recorded by the checkpoint, else inferred from the text's loss
    train_text: Path | None = None
    slug: str = ""  # file-name-safe, unique within the run (pages are named after it)
    meta: Path | None = None  # nanoGPT: the dataset's meta.pkl when it is not where nanoGPT keeps it
    seeds: tuple[Path, ...] = ()  # other training seeds of the same recipe (checkpoints or folders): roles,
    # replication, copying and ablation are measured on each; pages and figures are drawn for `path`


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's numbers and output."""

    models: tuple[ModelSpec, ...]
    out: Path = Path("site")
    seed: int = 0
    train_windows: int = 256
    heldout_windows: int | None = None  # None = every held-out window
    n_probes: int = 64
    ablation_windows: int = 32  # held-out windows for head ablation (0 = skip the causal stage)
    control_windows: int = 32  # windows for the random-init and shuffled-text controls
    control_draws: int = 8  # random-init models drawn (seeded); the control's ceiling is their high end
    timeline_windows: int = 64  # held-out windows per sibling checkpoint for the emergence timeline (0 = skip)
    batch_size: int = 32
    oov: str = "error"
    pdf: bool = True
    class_overrides: dict = field(default_factory=dict)
    vowels: dict = field(default_factory=dict)  # language code -> its vowel letters, for languages without a record
    hypotheses: tuple = ()  # your own detectors ([[hypothesis]] tables; see hypotheses.py)
    author: str = ""  # shown on the PDF's title page (rendering only: not part of the analysis)
    course: str = ""
    device: str = "auto"  # where forward passes run: auto (cuda if torch sees one, else cpu), cpu, cuda[:N], mps
    workers: int | None = None  # local worker processes (default: the cores); changes no number
    scheduler: str | None = None  # a dask.distributed scheduler's address: the timeline's tasks run there

    def torch_device(self):
        """The device forward passes run on (checked: a one-line error if this machine has none)."""
        from .device import resolve

        return resolve(self.device)

    def fingerprint(self) -> dict:
        """The settings that change the numbers (for results.json and the cache)."""
        device = self.torch_device().type
        return {"seed": self.seed, "train_windows": self.train_windows, "heldout_windows": self.heldout_windows,
                "n_probes": self.n_probes, "oov": self.oov, "class_overrides": self.class_overrides,
                "ablation_windows": self.ablation_windows, "control_windows": self.control_windows,
                "control_draws": self.control_draws,
                "timeline_windows": self.timeline_windows, **({"vowels": self.vowels} if self.vowels else {}),
                **({"hypotheses": [vars(h) for h in self.hypotheses]} if self.hypotheses else {}),
                # accelerators round differently: their numbers are cached apart (CPU keys stay as they were)
                **({"device": device} if device != "cpu" else {})}


def latest_checkpoint(folder: Path) -> Path:
    """The highest-step reportgen checkpoint (stepN.pt, by number) in a folder."""
    found = sorted(folder.glob("step*.pt"), key=lambda p: (int("".join(filter(str.isdigit, p.stem)) or 0), p.name))
    if not found:
        raise ReportgenError(f"{folder}: no shipped checkpoints (step*.pt); train them with `reportgen train`")
    return found[-1]


SEED_FOLDER = re.compile(r"seed(\d+)")


def seed_folders(folder: Path) -> list[Path]:
    """A family folder's `seedN/` subfolders, by N (none when `folder` is a file or has none)."""
    if not folder.is_dir():
        return []
    found = [(int(m[1]), p) for p in folder.iterdir() if p.is_dir() and (m := SEED_FOLDER.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def family(path: Path) -> tuple[Path, tuple[Path, ...]]:
    """(the checkpoint or folder whose pages are drawn, the other seeds) of a model path. A folder with `seedN/`
    subfolders is a family of seeds of one recipe: its own checkpoints (if it holds any) are the drawn seed, else
    its lowest-numbered `seedN/`; every other `seedN/` is measured alongside."""
    seeds = seed_folders(path)
    if not seeds:
        return path, ()
    own = any(path.glob("*.pt"))
    drawn = path if own else seeds[0]
    return drawn, tuple(s for s in seeds if s != drawn)


def default_models() -> tuple[ModelSpec, ...]:
    """The shipped English and Hebrew models (their final checkpoints), with their other seeds when shipped."""
    out = []
    for code, label in (("en", "English"), ("he", "Hebrew")):
        folder = DEFAULT_MODELS / code
        _, seeds = family(folder)
        out.append(ModelSpec(latest_checkpoint(folder), label, code, seeds=seeds))
    return tuple(out)


# Settings: (type, minimum, maximum) for numbers; checked the same way from the CLI and from TOML.
LIMITS = {
    "seed": (int, 0, 2 ** 32 - 1), "train_windows": (int, 2, 100_000), "heldout_windows": (int, 2, 1_000_000),
    "n_probes": (int, 2, 4096), "ablation_windows": (int, 0, 10_000), "control_windows": (int, 2, 10_000),
    "control_draws": (int, 1, 1000),
    "timeline_windows": (int, 0, 10_000), "batch_size": (int, 1, 1024), "workers": (int, 1, 1024),
}
MODEL_KEYS = {"path", "label", "language", "text", "heldout", "with_residuals", "train_text", "meta", "seeds"}
MAX_LABEL = 1000  # labels are shown as given; file names use a slug of at most MAX_SLUG characters
MAX_SLUG = 40


def read_toml(path: Path) -> dict:
    """Settings from a TOML file; errors name the file."""
    if path.exists() and not path.is_file():
        raise ReportgenError(f"{path}: not a regular file")
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ReportgenError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ReportgenError(f"{path}: invalid TOML ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportgenError(f"{path}: cannot read ({exc})") from None
    known = ({f.name for f in fields(RunConfig)} | {"model", "hypothesis"}) - {"hypotheses"}
    unknown = set(data) - known
    if unknown:
        raise ReportgenError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
    return data


def _spec(entry, source: str, n: int) -> ModelSpec:
    """A ModelSpec from a TOML [[model]] table, every key checked."""
    where = f"{source}: model {n}"
    if not isinstance(entry, dict):
        raise ReportgenError(f"{where}: each model must be a table with a path")
    unknown = set(entry) - MODEL_KEYS
    if unknown:
        raise ReportgenError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    if not isinstance(entry.get("path"), str) or not entry["path"]:
        raise ReportgenError(f"{where}: needs a path (a string)")
    for key in ("label", "language", "text", "heldout", "train_text", "meta"):
        if key in entry and not isinstance(entry[key], str):
            raise ReportgenError(f"{where}: {key} must be a string, not {type(entry[key]).__name__}")
    if "with_residuals" in entry and not isinstance(entry["with_residuals"], bool):
        raise ReportgenError(f"{where}: with_residuals must be true or false, not {entry['with_residuals']!r}")
    seeds = entry.get("seeds", [])
    if not isinstance(seeds, list) or not all(isinstance(x, str) and x for x in seeds):
        raise ReportgenError(f"{where}: seeds must be a list of checkpoint paths (strings)")
    p = lambda k: Path(entry[k]) if entry.get(k) else None
    path, found = family(Path(entry["path"]))
    return ModelSpec(path, entry.get("label") or run_name(Path(entry["path"])), entry.get("language"),
                     p("text"), p("heldout"), entry.get("with_residuals"), p("train_text"), meta=p("meta"),
                     seeds=found + tuple(Path(x) for x in seeds))


def _check(cfg: RunConfig, origin) -> None:
    """Every setting's type and range; one-line errors naming the key and where it was set (`origin(key)`)."""
    from .classes import CLASS_NAMES
    from .languages import CODE, LANGUAGE_CODES
    from .tokenizer import OOV_POLICIES

    for key, (kind, lo, hi) in LIMITS.items():
        v = getattr(cfg, key)
        if v is None and key in ("heldout_windows", "workers"):
            continue
        if isinstance(v, bool) or not isinstance(v, kind):
            raise ReportgenError(f"{origin(key)}: {key} must be a whole number, not {v!r}")
        if not lo <= v <= hi:
            raise ReportgenError(f"{origin(key)}: {key} must be between {lo} and {hi}, not {v}")
    if cfg.oov not in OOV_POLICIES:
        raise ReportgenError(f"{origin('oov')}: oov must be one of {', '.join(OOV_POLICIES)}, not {cfg.oov!r}")
    for key in ("author", "course"):
        if not isinstance(getattr(cfg, key), str) or len(getattr(cfg, key)) > 200:
            raise ReportgenError(f"{origin(key)}: {key} must be text of at most 200 characters")
    from .device import resolve

    resolve(cfg.device, origin("device"))
    if cfg.scheduler is not None and (not isinstance(cfg.scheduler, str) or not cfg.scheduler.strip()):
        raise ReportgenError(f"{origin('scheduler')}: scheduler must be a dask scheduler's address such as "
                             f"tcp://10.0.0.5:8786, not {cfg.scheduler!r}")
    if not isinstance(cfg.pdf, bool):
        raise ReportgenError(f"{origin('pdf')}: pdf must be true or false, not {cfg.pdf!r}")
    if not isinstance(cfg.class_overrides, dict):
        raise ReportgenError(f"{origin('class_overrides')}: class_overrides must be a table of character = class")
    for char, name in cfg.class_overrides.items():
        if not isinstance(char, str) or len(char) != 1:
            raise ReportgenError(f"{origin('class_overrides')}: class_overrides keys must be single characters, not {char!r}")
        if name not in CLASS_NAMES:
            raise ReportgenError(f"{origin('class_overrides')}: class_overrides[{char!r}] must be one of {', '.join(CLASS_NAMES)}, "
                                 f"not {name!r}")
    if not isinstance(cfg.vowels, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                    for k, v in cfg.vowels.items()):
        raise ReportgenError(f"{origin('vowels')}: vowels must be a table of language code = \"letters\"")
    for code, letters in cfg.vowels.items():
        if code in LANGUAGE_CODES:
            raise ReportgenError(f"{origin('vowels')}: vowels.{code}: {code} has its own vowel record; the vowels "
                                 f"table is for languages reportgen has no record of")
        if not letters or not all(c.isalpha() for c in letters):
            raise ReportgenError(f"{origin('vowels')}: vowels.{code} must be letters, not {letters!r}")
    for m in cfg.models:
        if m.language is not None and m.language not in LANGUAGE_CODES and not CODE.match(m.language):
            raise ReportgenError(f"{origin('models')}: language of {m.path} must be a language code such as "
                                 f"{', '.join(LANGUAGE_CODES)}, not {m.language!r}")
        if not m.label.strip() or len(m.label) > MAX_LABEL:
            raise ReportgenError(f"{origin('models')}: label of {m.path} must be 1 to {MAX_LABEL} characters")
        if m.heldout is not None and m.text is None:
            raise ReportgenError(f"{origin('models')}: --heldout for {m.path} needs --text (the training part of that text)")


def _without_bidi_controls(cfg: RunConfig) -> RunConfig:
    """Labels, author and course without explicit bidi controls (`languages.without_bidi_controls`)."""
    from .languages import without_bidi_controls

    def clean(s):
        return without_bidi_controls(s) if isinstance(s, str) else s

    models = tuple(replace(m, label=clean(m.label)) if isinstance(m, ModelSpec) else m for m in cfg.models)
    return replace(cfg, author=clean(cfg.author), course=clean(cfg.course), models=models)


def slug(text: str) -> str:
    """A file-name-safe slug of at most MAX_SLUG characters (a hash when nothing safe is left)."""
    s = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:MAX_SLUG].strip("-")
    return s or hashlib.sha256(text.encode()).hexdigest()[:8]


def build_config(toml: Path | None = None, **overrides) -> RunConfig:
    """Defaults, then the TOML file, then explicit (non-None) overrides such as CLI arguments; all checked."""
    values: dict = {}
    source = str(toml) if toml is not None else "arguments"
    if toml is not None:
        data = read_toml(toml)
        values = {k: v for k, v in data.items() if k not in ("model", "hypothesis")}
        if "hypothesis" in data:
            from .hypotheses import parse

            values["hypotheses"] = parse(data["hypothesis"], str(toml))
        if "model" in data:
            if not isinstance(data["model"], list):
                raise ReportgenError(f"{toml}: models are given as [[model]] tables")
            values["models"] = tuple(_spec(m, str(toml), n + 1) for n, m in enumerate(data["model"]))
        if "out" in values:
            if not isinstance(values["out"], str) or not values["out"]:
                raise ReportgenError(f"{toml}: out must be a folder name (a string), not {values['out']!r}")
            values["out"] = Path(values["out"])
    values.update({k: v for k, v in overrides.items() if v is not None})
    if not values.get("models"):
        values["models"] = default_models()
    try:
        cfg = RunConfig(**values)
    except TypeError as exc:
        raise ReportgenError(f"{source}: {exc}") from None
    cfg = _without_bidi_controls(cfg)
    cli_keys = {k for k, v in overrides.items() if v is not None}
    _check(cfg, lambda key: "command line" if key in cli_keys else source)
    labels = [m.label for m in cfg.models]
    if len(set(labels)) != len(labels):
        cfg = replace(cfg, models=tuple(replace(m, label=f"{m.label} ({i + 1})") for i, m in enumerate(cfg.models)))
    slugs: list[str] = []
    for m in cfg.models:  # unique file names: 'Model A' and 'model-a' must not overwrite each other's pages
        base = s = slug(m.label)
        k = 2
        while s in slugs:
            s, k = f"{base}-{k}", k + 1
        slugs.append(s)
    return replace(cfg, models=tuple(replace(m, slug=s) for m, s in zip(cfg.models, slugs)))
