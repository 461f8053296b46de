"""The whole run in one function, reading like the design table: config -> checkpoints and text ->
capture, detectors, statistics -> explanations, figures -> site, results.json, PDF.

Output is built in a staging folder beside `out` and swapped in only when complete. A status
file in `out` records a hash of every input (checkpoints, texts, settings, code, templates);
a re-run with nothing changed returns at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from . import __version__
from .config import RunConfig, template_dir
from .progress import stderr

STATUS = ".reportgen-status.json"


def _file_digest(h, path: Path) -> None:
    """Feed a file's (or a folder's .txt files') name and bytes into a hash."""
    files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
    for f in files:
        h.update(str(f).encode())
        h.update(f.read_bytes() if f.is_file() else b"<missing>")


RENDER_CODE = ("report.py", "figures.py", "explain.py")  # change only the rendering, not the numbers
FIGURE_INPUTS = ".figure-inputs.npz"


def analysis_key(cfg: RunConfig) -> str:
    """Hash of every file and setting the numbers depend on, computed without parsing anything."""
    from .corpora import corpus_files

    h = hashlib.sha256(__version__.encode())
    h.update(json.dumps(cfg.fingerprint(), sort_keys=True, default=str).encode())
    for spec in cfg.models:
        h.update(f"{spec.label}|{spec.language}|{spec.with_residuals}".encode())
        folder = spec.path if spec.path.is_dir() else spec.path.parent
        files = sorted(folder.glob("*.pt")) + [folder / "tokenizer.json"] + sorted(folder.glob("*_props.json"))
        for f in [spec.path] + files:  # the checkpoint and its siblings (timeline), vocabulary, hyperparameters
            if f.is_file() or f == spec.path:
                _file_digest(h, f)
        for f in (spec.text, spec.heldout, spec.train_text):
            if f is not None:
                _file_digest(h, f)
        if spec.text is None:
            for f in corpus_files(spec.language) if spec.language else corpus_files("en") + corpus_files("he"):
                _file_digest(h, f)
    for path in sorted(Path(__file__).resolve().parent.glob("*.py")):
        if path.name not in RENDER_CODE:
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def render_key(cfg: RunConfig, akey: str) -> str:
    """Hash of the analysis key plus everything that only changes how the numbers are shown."""
    h = hashlib.sha256(akey.encode())
    h.update(str(cfg.pdf).encode())
    code = Path(__file__).resolve().parent
    for path in [code / n for n in RENDER_CODE] + sorted(template_dir().iterdir()):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _status(out: Path) -> dict:
    """The previous run's status file, or {}."""
    try:
        return json.loads((out / STATUS).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def build(cfg: RunConfig, analyze_only: bool = False, force: bool = False) -> Path:
    """Run every stage for `cfg`; return the output folder (unchanged if already up to date).

    Two levels of cache: nothing changed -> return at once; only rendering changed (templates,
    report code, the PDF switch) -> reuse the stored analysis and render again.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    akey = analysis_key(cfg)
    key = akey if analyze_only else render_key(cfg, akey)
    previous = _status(cfg.out)
    wanted = ["results.json"] + ([] if analyze_only else ["index.html"] + (["report.pdf"] if cfg.pdf else []))
    if not force and previous.get("key") == key and all((cfg.out / f).exists() for f in wanted):
        stderr.print(f"{cfg.out}: up to date (inputs unchanged); nothing to do", soft_wrap=True)
        return cfg.out
    from .analyze import analyze, prepare, write_json  # heavy imports only when there is work to do
    from .diff import WINDOWS_FILE, save_windows
    from .report import (FigureInputs, build_site, load_figure_inputs, save_figure_inputs, swap_into_place,
                         write_pdf, write_site)

    inputs = None
    if not force and previous.get("analysis") == akey and (cfg.out / WINDOWS_FILE).exists():
        inputs = load_figure_inputs(cfg.out / FIGURE_INPUTS)
    if inputs is not None:  # the numbers cannot have changed: render them again
        results = json.loads((cfg.out / "results.json").read_text(encoding="utf-8"))
        stderr.print(f"{cfg.out}: analysis unchanged; rendering again", soft_wrap=True)
        timings["load"] = time.perf_counter() - t0
    else:
        prepared = [prepare(spec, cfg) for spec in cfg.models]
        timings["load"] = time.perf_counter() - t0
        t = time.perf_counter()
        analyses, results = analyze(cfg, prepared)
        inputs = [FigureInputs.of(a) for a in analyses]
        timings["analyze"] = time.perf_counter() - t

    staging = cfg.out.with_name(f".{cfg.out.name}.staging-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        write_json(staging / "results.json", results)
        if "analyze" in timings:
            save_windows(staging / WINDOWS_FILE, analyses)
        else:
            shutil.copy(cfg.out / WINDOWS_FILE, staging / WINDOWS_FILE)
        save_figure_inputs(staging / FIGURE_INPUTS, inputs)
        figure_cache = {}
        if not analyze_only:
            if (cfg.out / "figures").is_dir():  # reuse unchanged figures
                shutil.copytree(cfg.out / "figures", staging / "figures")
            figure_cache = previous.get("figures", {})
            t = time.perf_counter()
            with stderr.status("rendering figures and pages"):
                site = build_site(inputs, results, staging, figure_cache,
                                  diff_link=(cfg.out / "diff" / "diff.html").exists())
                write_site(site, staging)
            used = set(figure_cache.values())
            for stale in (staging / "figures").glob("*.png"):
                if stale.name not in used:
                    stale.unlink()
            timings["figures_and_pages"] = time.perf_counter() - t
            if cfg.pdf:
                t = time.perf_counter()
                with stderr.status("writing the PDF"):
                    write_pdf(site, staging)
                timings["pdf"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t0
        write_json(staging / "timings.json", {k: round(v, 2) for k, v in timings.items()})
        write_json(staging / STATUS, {"key": key, "analysis": akey, "figures": figure_cache})
        swap_into_place(staging, cfg.out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    stderr.print(f"wrote {cfg.out} in {timings['total']:.1f} s "
                 f"({', '.join(f'{k} {v:.1f} s' for k, v in timings.items() if k != 'total')})", soft_wrap=True)
    return cfg.out
