"""The whole run, reading like the design table: cache check -> analyse (or reuse the stored
analysis) -> results.json -> figures and pages -> site and PDF, all inside a staged output folder.

The cache keys are hashes of every input, computed before any heavy import: nothing changed ->
return at once; only rendering changed (templates, page code, the PDF switch) -> reuse the
stored analysis and render again; anything else -> analyse again.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import time
from pathlib import Path

from . import __version__
from .config import RunConfig, slug, template_dir
from .layouts import run_files
from .outputs import RESULTS, WINDOWS, OutputFolder, write_json, write_text_atomic
from .progress import say
from .taskcache import sidecars
from .webmodel import model_script_file, rename_script

RENDER_CODE = ("pages.py", "site.py", "figures.py", "gridfig.py", "explain.py", "panels.py", "rowgroups.py", "timefig.py")  # how numbers are shown, not the numbers


def _file_digest(h, path: Path) -> None:
    """Feed a file's (or a folder's .txt files') name and bytes into a hash."""
    files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
    for f in files:
        h.update(str(f).encode())
        h.update(f.read_bytes() if f.is_file() else b"<missing>")


def analysis_key(cfg: RunConfig) -> str:
    """Hash of every file and setting the numbers depend on, computed without parsing anything."""
    from .corpora import corpus_files
    from .languages import LANGUAGE_CODES

    h = hashlib.sha256(__version__.encode())
    h.update(json.dumps(cfg.fingerprint(), sort_keys=True, default=str).encode())
    for spec in cfg.models:
        h.update(f"{spec.language}|{spec.with_residuals}".encode())  # not the label: it changes no number
        folder = spec.path if spec.path.is_dir() else spec.path.parent
        files = []  # one checkpoint without a timeline (a diff's side): its siblings change no number
        if spec.path.is_dir() or cfg.timeline_windows:  # a folder's highest step, the timeline's checkpoints
            files = sorted(folder.glob("*.pt")) + [folder / "tokenizer.json"] + sorted(folder.glob("*_props.json"))
            files += [f for f in run_files(spec.path) if f not in files]  # a nested layout's step folders
        known = set(files)
        for ckpt in [f for f in [spec.path] + files if f.suffix == ".pt"]:  # what the loader may read beside each
            beside = [f for f in sidecars(ckpt) if f not in known]  # checkpoint (nanoGPT's meta.pkl, props.json)
            known.update(beside)
            files += beside
        for f in [spec.path] + files:  # the checkpoint and its siblings (timeline), vocabulary, hyperparameters
            if f.is_file() or f == spec.path:
                _file_digest(h, f)
        for seed in spec.seeds:  # other seeds: the checkpoint measured (a folder's highest step) and its vocabulary
            sf = sorted(seed.glob("*.pt")) + [seed / "tokenizer.json"] if seed.is_dir() else [seed]
            for f in sf:
                if f.is_file() or f == seed:
                    _file_digest(h, f)
        for f in (spec.text, spec.heldout, spec.train_text, spec.meta):
            if f is not None:
                _file_digest(h, f)
        if spec.text is None:
            for f in corpus_files(spec.language) if spec.language else [f for c in LANGUAGE_CODES for f in corpus_files(c)]:
                _file_digest(h, f)
    for path in sorted(Path(__file__).resolve().parent.glob("*.py")):
        if path.name not in RENDER_CODE:
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def render_key(cfg: RunConfig, akey: str) -> str:
    """Hash of the analysis key plus everything that only changes how the numbers are shown."""
    h = hashlib.sha256(akey.encode())
    h.update(json.dumps([cfg.pdf, cfg.author, cfg.course, [[m.label, m.slug] for m in cfg.models]]).encode())
    code = Path(__file__).resolve().parent
    for path in [code / n for n in RENDER_CODE] + sorted(template_dir().iterdir()):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


class Cache:
    """What the previous run in `cfg.out` left that this run may reuse."""

    def __init__(self, cfg: RunConfig, analyze_only: bool, force: bool):
        self.cfg = cfg
        self.folder = OutputFolder(cfg.out)
        self.analysis = analysis_key(cfg)
        self.key = self.analysis if analyze_only else render_key(cfg, self.analysis)
        self.wanted = [RESULTS] + ([] if analyze_only else ["index.html"] + (["report.pdf"] if cfg.pdf else []))
        self.status = {} if force else self.folder.status()

    def up_to_date(self) -> bool:
        """Nothing changed and every file the last run wrote is still there."""
        return self.status.get("key") == self.key and self.folder.complete(self.wanted)

    def stored_analysis(self):
        """(run, per-window values, figure inputs, explorer model scripts) of an unchanged analysis, or None."""
        files = [self.folder.path / f for f in (RESULTS, WINDOWS)]
        if self.status.get("analysis") != self.analysis or not all(f.is_file() for f in files):
            return None
        inputs = self.folder.read_figure_inputs()  # also where an older reportgen kept them
        if inputs is None:
            return None
        run = self.folder.read_run()
        scripts = {}
        for m in run.models:  # made with the analysis (the model is loaded there): reused, or analyse again
            name = model_script_file(m.slug or slug(m.label))
            if not (self.folder.path / name).is_file():
                return None
            scripts[m.label] = (name, (self.folder.path / name).read_text(encoding="utf-8"))
        return relabel(run, self.folder.read_windows(), inputs, scripts, self.cfg)

    def figures(self) -> dict[str, str]:
        """Figure job key -> file name, for figures still present in the output folder."""
        cached = self.status.get("figures", {})
        return {k: v for k, v in cached.items() if (self.folder.path / "figures" / v).is_file()}


def relabel(run, windows, inputs, scripts, cfg: RunConfig):
    """A stored analysis under this run's labels and page names (slugs): a label changes no number, so it is not part
    of the analysis key and is applied here, to results, per-window values, figure inputs and the explorer's model
    files alike. None (analyse again) when the stored models are not this run's models one for one."""
    from dataclasses import replace

    if len(run.models) != len(cfg.models) or {it.label for it in inputs} != {m.label for m in run.models}:
        return None
    new = {m.label: (spec.label, spec.slug or slug(spec.label)) for m, spec in zip(run.models, cfg.models)}
    if all(m.label == label and (m.slug or slug(m.label)) == s for m, (label, s) in zip(run.models, new.values())):
        return run, windows, inputs, scripts
    renamed = {}
    for old, (name, text) in scripts.items():
        label, s = new[old]
        text = rename_script(text, name, model_script_file(s))
        if text is None:
            return None
        renamed[label] = (model_script_file(s), text)
    run = replace(run, models=[replace(m, label=new[m.label][0], slug=new[m.label][1]) for m in run.models])
    return (run, {new[k][0] if k in new else k: v for k, v in windows.items()},
            [replace(it, label=new[it.label][0]) for it in inputs], renamed)


def build(cfg: RunConfig, analyze_only: bool = False, force: bool = False) -> Path:
    """Run every stage for `cfg`; return the output folder (unchanged if already up to date). The output's lock
    is held from the start: a second run into the same folder is refused before it does any work."""
    OutputFolder.check_target(cfg.out)  # before any work: never write into someone else's folder
    with OutputFolder.locked(cfg.out):
        return _build(cfg, analyze_only, force)


def _build(cfg: RunConfig, analyze_only: bool, force: bool) -> Path:
    clock = Clock()
    from .catalogue import set_hypotheses

    set_hypotheses(cfg.hypotheses)  # your hypotheses are detectors for this run, analysed or re-rendered
    cache = Cache(cfg, analyze_only, force)
    if cache.up_to_date():
        say(f"{cfg.out}: up to date (inputs unchanged); nothing to do")
        return cfg.out
    from .analyze import analyze, new_run, prepare  # heavy imports only when there is work to do

    stored = cache.stored_analysis()
    if stored is not None:
        say(f"{cfg.out}: analysis unchanged; rendering again")
        run, windows, inputs, scripts = stored
        stages = {}
    else:
        prepared = clock.lap("load", [prepare(spec, cfg) for spec in cfg.models])
        # the site's modules (matplotlib among them) are imported while the workers capture, off the serial path
        analysed = clock.lap("analyze", analyze(cfg, prepared, lambda: importlib.import_module(".site", __package__)))
        run, windows, inputs = new_run(cfg, analysed.models), analysed.windows, analysed.figure_inputs
        stages = analysed.stages
        scripts = clock.lap("explorer_model", explorer_scripts(run, prepared))
    from .site import write_site

    with OutputFolder.staged(cfg.out) as out:
        out.write_run(run)  # the pages are built from it as written (floats at 6 significant digits)
        out.write_windows(windows)
        out.write_figure_inputs(inputs)
        figures = {}
        if not analyze_only:
            for name, text in scripts.values():
                write_text_atomic(out.path / name, text)
            figures = cache.figures()
            write_site(out.read_run(), inputs, out, figures, pdf=cfg.pdf, previous=cache.folder, clock=clock,
                       diff_link=(cfg.out / "diff" / "diff.html").exists(), title=(cfg.author, cfg.course),
                       explorer={label: name for label, (name, _) in scripts.items()})
        write_json(out.path / "timings.json", {**clock.totals(), "analysis_stages": stages})
        out.record(key=cache.key, analysis=cache.analysis, figures=figures)
    say(f"wrote {cfg.out} in {clock.total():.1f} s ({clock.summary()})")
    return cfg.out


def explorer_scripts(run, prepared) -> dict[str, tuple[str, str]]:
    """Model label -> (file name, text) of the explorer's model script of each analysed model (webmodel)."""
    from .webmodel import model_script

    by_label = {p.spec.label: p for p in prepared}
    scripts = {}
    for m in run.models:
        prep = by_label[m.label]
        name = model_script_file(m.slug or slug(m.label))
        scripts[m.label] = (name, model_script(prep.bundle, prep.split.language, prep.heldout_start(), name,
                                               own_text=prep.spec.text is not None))
    return scripts


class Clock:
    """Stage timings: `lap(name, value)` records the time since the previous lap."""

    def __init__(self):
        self.start = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str, value=None):
        now = time.perf_counter()
        self.laps[name] = self.laps.get(name, 0.0) + now - self.last
        self.last = now
        return value

    def total(self) -> float:
        return time.perf_counter() - self.start

    def totals(self) -> dict[str, float]:
        return {**{k: round(v, 2) for k, v in self.laps.items()}, "total": round(self.total(), 2)}

    def summary(self) -> str:
        return ", ".join(f"{k} {v:.1f} s" for k, v in self.laps.items())
