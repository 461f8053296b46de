"""Your hypotheses tested from Python (`api.test`) exactly as a run tests them: the run's preparation of a text, its
capture, nulls, bootstrap, Benjamini–Hochberg family and findings (`analyze.analyze_model`, `stats.add_q_values`,
`roles.findings`), for a model already loaded; nothing here computes a statistic of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from . import notebook
from .checkpoint import ModelBundle
from .classes import CharClasses
from .errors import ReportgenError
from .hypotheses import Hypothesis


@dataclass(frozen=True)
class HypothesisTest:
    """What `test` measured: for every head and split ("train", "heldout") the run's summary fields of each
    hypothesis (`fields`: mean, chance, ci_low, ci_high, the nulls its kind of keys gets, p, q, gain, lift, ...,
    each (layers, heads)), the findings (heads whose rule holds on training windows, with held-out numbers and
    whether they replicated), and the built-in detectors' statistics of the same analysis (`stats`)."""

    hypotheses: tuple[Hypothesis, ...]
    rules: dict[str, str]  # detector -> the rule's sentence
    fields: dict[str, dict[str, dict[str, np.ndarray]]]  # detector -> split -> field -> (L, H)
    findings: list  # results.Finding of the hypotheses, replicated and strongest first
    stats: dict  # split -> stats.SplitStats of every detector (the hypotheses' and the built-in ones)
    n_windows: dict[str, int]
    text: str  # where the text came from and how it was split

    def summary(self, layer: int, head: int, split: str = "heldout", name: str | None = None):
        """One head's `results.Summary` of a hypothesis (by name; default the first) on a split."""
        from .roles import summary

        detector = self.hypotheses[0].detector if name is None else f"hyp_{name}"
        return summary(self.stats[split], detector, layer, head)

    @property
    def supported(self) -> list[str]:
        """Heads whose rule held on training windows and again on held-out ones, e.g. ['L0H0']."""
        return [f.head_name for f in self.findings if f.replicated]

    def _repr_html_(self) -> str:
        return notebook.test_table(self)


def _hypotheses(hypothesis) -> tuple[Hypothesis, ...]:
    """Hypotheses from `Hypothesis` objects or dicts of TOML-style settings, checked as the TOML ones are."""
    from .hypotheses import parse

    items = hypothesis if isinstance(hypothesis, (list, tuple)) else [hypothesis]
    entries = []
    for h in items:
        if isinstance(h, Hypothesis):
            entries.append({k: v for k, v in vars(h).items() if v is not None and (k != "description" or v)})
        elif isinstance(h, dict):
            entries.append(h)
        else:
            raise ReportgenError(f"a hypothesis is an api.Hypothesis or a dict of its settings, not {type(h).__name__}")
    return parse(entries, "api.test")


def test(hypothesis, model: ModelBundle, text: str | Path, *, heldout: str | Path | None = None,
         language: str | None = None, settings: str | Path | None = None, **options) -> HypothesisTest:
    """Test hypotheses about heads on `text` exactly as `reportgen analyze` would with them in its settings: the
    same windows, nulls (uniform chance, positional, label swap, word structure, as the hypothesis' kind of keys
    gets), moving-block bootstrap CIs, q-values (one Benjamini–Hochberg family over every head and tested detector
    of the model, probes and your hypotheses included) and replication on the held-out part.

    `hypothesis`: an `api.Hypothesis`, a dict of `[[hypothesis]]` settings, or a list of them. `text`: a `Path`
    (file or folder) read as `--text` reads it (last 10 % held out, or `heldout`), or the text itself as a string
    (split the same way). `settings`: a TOML file whose analysis settings apply (its models and hypotheses are
    not used); `options` override them (seed, train_windows, heldout_windows, n_probes, batch_size, oov,
    class_overrides, vowels). Deterministic: the same inputs give the same numbers."""
    import tempfile

    from rich.progress import Progress

    from . import catalogue
    from .analyze import analyze_model, check_script, load_text, role_name, with_books
    from .loader import check_language
    from .capture import encode
    from .config import ModelSpec, build_config, display_path
    from .hypotheses import check_targets
    from .languages import ensure as ensure_language
    from .results import SPLITS
    from .roles import findings as find
    from .stages import Prepared
    from .stats import add_q_values

    if not isinstance(model, ModelBundle):
        raise ReportgenError(f"test: model must be a model from reportgen.api.load, not {type(model).__name__}")
    if language is not None:
        check_language(language, "test")
    hyps = _hypotheses(hypothesis)
    allowed = {"seed", "train_windows", "heldout_windows", "n_probes", "batch_size", "oov", "class_overrides",
               "vowels"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ReportgenError(f"api.test: unknown option(s) {', '.join(unknown)}; choose from "
                             f"{', '.join(sorted(allowed))}")
    lang = language or model.language
    with tempfile.TemporaryDirectory() as tmp:
        given = isinstance(text, str)
        if given:
            path = Path(tmp) / "text.txt"
            path.write_text(text, encoding="utf-8")
        elif isinstance(text, Path):
            path = text
        else:
            raise ReportgenError(f"api.test: text is a string (the text) or a Path (a file), not {type(text).__name__}")
        if isinstance(heldout, str):
            (Path(tmp) / "heldout.txt").write_text(heldout, encoding="utf-8")
            heldout = Path(tmp) / "heldout.txt"
        spec = ModelSpec(model.path, "api.test", lang, path, heldout)
        base = replace(build_config(Path(settings) if settings else None, models=(spec,), out=Path(tmp)),
                       hypotheses=())
        cfg = build_config(None, models=(spec,), out=Path(tmp), hypotheses=hyps,
                           **{**{k: getattr(base, k) for k in allowed}, **options})
        spec = cfg.models[0]
        # the run's `analyze.prepare`, from the loaded model instead of its checkpoint file
        ensure_language(lang, model.tokenizer.vocab, cfg.vowels.get(lang or "", ""))
        check_script(model, language)
        split = load_text(spec, lang)
        name = "the given text" if given else None
        if given:
            split = replace(split, name="text", description=split.description.replace(display_path(path), name))
        classes = CharClasses.for_vocab(model.tokenizer.vocab, split.language).with_overrides(cfg.class_overrides)
        sources = {"train": f"{name or display_path(path)} (training part)",
                   "heldout": str(heldout or f"{name or display_path(path)} (held-out part)")}
    ids = {s: encode(model, getattr(split, s), sources[s], cfg.oov) for s in SPLITS}
    T = model.config.max_context_len
    for s in SPLITS:
        if len(ids[s]) // T < 2:
            raise ReportgenError(f"{sources[s]}: {s} text has {len(ids[s])} characters, shorter than two windows of "
                                 f"{T} (the model's context); windows are the unit of every statistic")
    sample = torch.as_tensor(ids["train"][: (len(ids["train"]) // T) * T].reshape(-1, T)[:64])
    check_targets(hyps, sample, torch.as_tensor(classes.lookup())[sample], model.tokenizer.vocab, sources["train"])
    prep = Prepared(spec, model, split, classes, ids, sources)

    saved = (list(catalogue.DETECTORS), list(catalogue.ROLE_DETECTORS), dict(catalogue.DETECTOR))
    catalogue.set_hypotheses(hyps)  # the run's catalogue with these hypotheses; the previous one is put back
    try:
        torch.manual_seed(cfg.seed)
        with Progress(disable=True) as progress:
            a = analyze_model(prep, cfg, 0, progress)
        for s in SPLITS:
            add_q_values([a.stats[s]])
        mine = {h.detector for h in hyps}
        found = [with_books(replace(f, role=role_name(f.role, split.language)), a)
                 for f in find(a.stats, model.config.n_layers, model.config.n_heads) if f.pattern in mine]
        rules = {h.detector: catalogue.DETECTOR[h.detector].rule.text() for h in hyps}
    finally:
        catalogue.DETECTORS[:], catalogue.ROLE_DETECTORS[:] = saved[0], saved[1]
        catalogue.DETECTOR.clear()
        catalogue.DETECTOR.update(saved[2])
    fields = {d: {s: dict(a.stats[s].values[d]) for s in SPLITS} for d in mine}
    return HypothesisTest(hyps, rules, fields, found, a.stats, {s: a.scores[s].n_windows for s in SPLITS},
                          split.description)
