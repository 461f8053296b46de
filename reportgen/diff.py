"""`reportgen diff A B`: what changed in each head between two runs or checkpoints of one model.

A and B are results folders / results.json files (per-window values are read from the
`windows.npz` written beside results.json) or checkpoints (then analysed first on the same
windows). Per head x tested detector: the change in the held-out statistic with a paired
bootstrap CI over the same windows, a two-sided paired t-test, Benjamini–Hochberg across every
comparison, and a class: appeared / vanished / strengthened / weakened / unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats as sstats

from .analyze import SCHEMA_VERSION
from .errors import ReportgenError
from .stats import ALPHA, bh, bootstrap_ci, resample_counts

MIN_CHANGE = 0.05  # smallest change in a statistic (attention mass or rate) that counts as a change
WINDOWS_FILE = "windows.npz"


@dataclass(frozen=True)
class RunData:
    """One side of a diff: the results document and, if available, per-window held-out values."""

    source: Path
    results: dict
    windows: dict[str, dict[str, np.ndarray]]  # model label -> detector -> (W, L, H)


def window_values(analyses) -> dict[str, dict[str, np.ndarray]]:
    """Per model label: held-out per-window values of every detector and probe, and the window starts."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for a in analyses:
        values = dict(a.scores["heldout"].observed)
        values.update({name: pr.observed for name, pr in a.probes.items()})  # rebuilt identically per text/seed
        values["__starts__"] = a.scores["heldout"].window_starts
        out[a.spec.label] = values
    return out


def save_windows(path: Path, analyses) -> None:
    """Write `window_values` (float32) for paired diffs later."""
    arrays = {f"{label}\x1f{name}": (v if name == "__starts__" else v.astype(np.float32))
              for label, values in window_values(analyses).items() for name, v in values.items()}
    with path.open("wb") as fh:
        np.savez_compressed(fh, **arrays)


def load_windows(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Inverse of save_windows; {} if the file is missing."""
    if not path.exists():
        return {}
    out: dict[str, dict[str, np.ndarray]] = {}
    try:
        with np.load(path, allow_pickle=False) as data:
            for key in data.files:
                label, name = key.split("\x1f", 1)
                out.setdefault(label, {})[name] = data[key]
    except (ValueError, OSError) as exc:
        raise ReportgenError(f"{path}: not a readable per-window file ({exc})") from None
    return out


def load_results(path: Path) -> RunData:
    """A results folder or results.json; errors name the file."""
    file = path / "results.json" if path.is_dir() else path
    if not file.exists():
        raise ReportgenError(f"{file}: not found")
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReportgenError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or "schema_version" not in doc or "models" not in doc:
        raise ReportgenError(f"{file}: not a reportgen results.json")
    if doc["schema_version"] != SCHEMA_VERSION:
        raise ReportgenError(f"{file}: results schema version {doc['schema_version']} is incompatible "
                             f"with this reportgen (schema {SCHEMA_VERSION}); re-run `reportgen analyze`")
    return RunData(file.parent, doc, load_windows(file.parent / WINDOWS_FILE))


def _pairs(a: RunData, b: RunData, force: bool) -> list[tuple[dict, dict]]:
    """Match models by label (or the single model of each side) and refuse different texts."""
    ma, mb = a.results["models"], b.results["models"]
    if len(ma) == 1 and len(mb) == 1:
        pairs = [(ma[0], mb[0])]
    else:
        by_label = {m["label"]: m for m in mb}
        pairs = [(m, by_label[m["label"]]) for m in ma if m["label"] in by_label]
    if not pairs:
        raise ReportgenError(f"{a.source} and {b.source}: no model label in common to compare")
    for x, y in pairs:
        if x["corpus"]["sha256"] != y["corpus"]["sha256"] and not force:
            raise ReportgenError(f"{a.source} vs {b.source}: model {x['label']!r} was analysed on different texts "
                                 f"({x['corpus']['description']} vs {y['corpus']['description']}); use --force to compare anyway")
    return pairs


def _roles(m: dict) -> dict[tuple[int, int], set[str]]:
    """Replicated roles per (layer, head)."""
    out: dict[tuple[int, int], set[str]] = {}
    for f in m["findings"]:
        if f["replicated"]:
            out.setdefault((f["layer"], f["head"]), set()).add(f["pattern"])
    return out


def _same_shape(x: dict, y: dict) -> bool:
    hx, hy = x["hyperparameters"], y["hyperparameters"]
    return (hx["n_layers"], hx["n_heads"]) == (hy["n_layers"], hy["n_heads"])


def compare(a: RunData, b: RunData, force: bool = False, seed: int = 0) -> dict:
    """The diff document: per model, per head x detector changes, role changes, loss and ablation changes."""
    models = []
    all_p: list[float] = []
    for x, y in _pairs(a, b, force):
        entry = {"label": x["label"], "a": {"checkpoint": x["checkpoint"]["path"], "step": x["checkpoint"]["step"]},
                 "b": {"checkpoint": y["checkpoint"]["path"], "step": y["checkpoint"]["step"]},
                 "comparable": _same_shape(x, y), "not_compared": []}
        bpc = [m.get("baseline_bits_per_char") or m["checkpoint"].get("heldout_bits_per_char_at_training") for m in (x, y)]
        entry["heldout_bits_per_char"] = {"a": bpc[0], "b": bpc[1],
                                          "change": None if None in bpc else bpc[1] - bpc[0]}
        if x["hyperparameters"]["vocab_size"] != y["hyperparameters"]["vocab_size"]:
            entry["not_compared"].append("vocabularies differ: class and character statistics are compared by name only")
        if not entry["comparable"]:
            entry["not_compared"].append("layer x head shapes differ: heads cannot be paired; only role prevalence "
                                         "per layer and family is compared")
            entry["changes"] = []
            entry["prevalence"] = {s: _prevalence(m) for s, m in (("a", x), ("b", y))}
            models.append(entry)
            continue
        wa, wb = a.windows.get(x["label"], {}), b.windows.get(y["label"], {})
        starts_equal = ("__starts__" in wa and "__starts__" in wb and np.array_equal(wa["__starts__"], wb["__starts__"]))
        paired = starts_equal and x["corpus"]["sha256"] == y["corpus"]["sha256"]
        if not paired:
            entry["not_compared"].append("per-window values unavailable or from different windows: CIs are unpaired "
                                         "(from each run's own CI), which is conservative")
        entry["paired"] = paired
        ra, rb = _roles(x), _roles(y)
        counts: dict[int, np.ndarray] = {}
        changes = []
        H = x["hyperparameters"]["n_heads"]
        for hx, hy in zip(x["heads"], y["heads"]):
            key = (hx["layer"], hx["head"])
            for name, dx in hx["detectors"].items():
                bx, by_ = dx["heldout"], hy["detectors"].get(name, {}).get("heldout")
                if by_ is None or "p" not in bx or bx.get("mean") is None or by_.get("mean") is None:
                    continue
                if paired and name in wa and name in wb:
                    d = wb[name][:, key[0], key[1]].astype(np.float64) - wa[name][:, key[0], key[1]]
                    if len(d) not in counts:  # one resample matrix per length, shared by its detectors
                        counts[len(d)] = resample_counts(len(d), np.random.default_rng([seed, len(d)]))
                    low, high, _ = bootstrap_ci(d[:, None], counts[len(d)])
                    sd = d.std(ddof=1)
                    p = 1.0 if sd == 0 and d.mean() == 0 else (0.0 if sd == 0 else
                                                               float(2 * sstats.t.sf(abs(d.mean()) / (sd / np.sqrt(len(d))), len(d) - 1)))
                    delta, lo, hi = float(d.mean()), float(low[0]), float(high[0])
                else:
                    delta = by_["mean"] - bx["mean"]
                    se = np.hypot((bx["ci_high"] - bx["ci_low"]) / 3.92, (by_["ci_high"] - by_["ci_low"]) / 3.92)
                    lo, hi = delta - 1.96 * se, delta + 1.96 * se
                    p = float(2 * sstats.norm.sf(abs(delta) / se)) if se > 0 else (1.0 if delta == 0 else 0.0)
                changes.append({"layer": key[0], "head": key[1], "head_name": f"L{key[0]}H{key[1]}", "detector": name,
                                "a": bx["mean"], "b": by_["mean"], "change": delta, "ci_low": lo, "ci_high": hi,
                                "p": p, "role_a": name in ra.get(key, set()), "role_b": name in rb.get(key, set())})
                all_p.append(p)
        entry["changes"] = changes
        entry["role_changes"] = [{"head_name": f"L{l}H{h}", "gained": sorted(rb.get((l, h), set()) - ra.get((l, h), set())),
                                  "lost": sorted(ra.get((l, h), set()) - rb.get((l, h), set()))}
                                 for l in range(x["hyperparameters"]["n_layers"]) for h in range(H)
                                 if ra.get((l, h), set()) != rb.get((l, h), set())]
        abl_a = {(r["layer"], r["head"]): r for r in x.get("ablation") or []}
        entry["ablation"] = [{"head_name": r["head_name"], "a": abl_a[(r["layer"], r["head"])]["delta_bits_per_char"],
                              "b": r["delta_bits_per_char"],
                              "change": r["delta_bits_per_char"] - abl_a[(r["layer"], r["head"])]["delta_bits_per_char"]}
                             for r in y.get("ablation") or [] if (r["layer"], r["head"]) in abl_a]
        entry["prevalence"] = {s: _prevalence(m) for s, m in (("a", x), ("b", y))}
        models.append(entry)
    q = bh(np.asarray(all_p, dtype=float)) if all_p else np.array([])
    k = 0
    for entry in models:
        for c in entry["changes"]:
            c["q"] = float(q[k])
            k += 1
            c["status"] = _status(c)
    return {"schema_version": SCHEMA_VERSION, "a": str(a.source), "b": str(b.source), "min_change": MIN_CHANGE,
            "alpha": ALPHA, "models": models,
            "significant": sum(c["status"] != "unchanged" for m in models for c in m["changes"])}


def _status(c: dict) -> str:
    """appeared / vanished / strengthened / weakened / unchanged for one comparison."""
    real = c["q"] < ALPHA and abs(c["change"]) >= MIN_CHANGE and (c["ci_low"] > 0 or c["ci_high"] < 0)
    if not real:
        return "unchanged"
    if c["role_b"] and not c["role_a"]:
        return "appeared"
    if c["role_a"] and not c["role_b"]:
        return "vanished"
    return "strengthened" if c["change"] > 0 else "weakened"


def _prevalence(m: dict) -> dict:
    """Replicated roles per layer and per family."""
    L = m["hyperparameters"]["n_layers"]
    per_layer = [sorted({f["role"] for f in m["findings"] if f["replicated"] and f["layer"] == l}) for l in range(L)]
    fams: dict[str, int] = {}
    for f in m["findings"]:
        if f["replicated"]:
            fams[f["family"]] = fams.get(f["family"], 0) + 1
    return {"per_layer": per_layer, "families": fams}


def run_data(path: Path, force: bool = False) -> RunData:
    """Results (folder or results.json) as they are; a checkpoint is analysed first with default settings."""
    if path.is_file() and path.suffix == ".json" or (path.is_dir() and (path / "results.json").exists()):
        return load_results(path)
    if not path.exists():
        raise ReportgenError(f"{path}: not found (expected a results folder, results.json or a checkpoint)")
    from .analyze import analyze
    from .checkpoint import load_checkpoint
    from .config import ModelSpec, build_config

    bundle = load_checkpoint(path)
    label = bundle.language and {"en": "English", "he": "Hebrew"}.get(bundle.language) or path.stem
    cfg = build_config(None, models=(ModelSpec(path, label, bundle.language),), out=Path("unused"))
    analyses, results = analyze(cfg)
    return RunData(path, results, window_values(analyses))


def render(doc: dict, out: Path, pdf: bool = True) -> None:
    """Write diff.json, diff.html and (optionally) diff.pdf into out, atomically per file."""
    import shutil

    from .analyze import write_json
    from .config import template_dir
    from .report import make_env

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "diff.json", doc)
    import datetime as dt

    from . import __version__

    nav = [("../index.html", "Overview")] if (out.parent / "index.html").exists() else []
    meta = {"generated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "reportgen_version": __version__, "settings": {"seed": 0}}
    html = make_env().get_template("diff.html.jinja2").render(d=doc, nav=nav + [("diff.html", "Diff")],
                                                              page="diff.html", results=meta)
    tmp = out / ".diff.html.tmp"
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out / "diff.html")
    shutil.copy(template_dir() / "style.css", out / "style.css")
    if pdf:
        import logging

        from weasyprint import CSS, HTML

        logging.getLogger("weasyprint").setLevel(logging.ERROR)
        HTML(string=html, base_url=str(out)).write_pdf(out / ".diff.pdf.tmp",
                                                       stylesheets=[CSS(filename=str(template_dir() / "print.css"))])
        (out / ".diff.pdf.tmp").replace(out / "diff.pdf")


def print_summary(doc: dict) -> None:
    """A rich table of every significant change and role change, on stdout."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for m in doc["models"]:
        table = Table(title=f"{m['label']}: step {m['a']['step']} -> step {m['b']['step']}")
        for col in ("head", "detector", "A", "B", "change [95% CI]", "q", "status"):
            table.add_column(col)
        for c in m["changes"]:
            if c["status"] != "unchanged":
                table.add_row(c["head_name"], c["detector"], f"{c['a']:.3f}", f"{c['b']:.3f}",
                              f"{c['change']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]", f"{c['q']:.2g}",
                              c["status"])
        console.print(table)
        for r in m.get("role_changes", []):
            console.print(f"  {r['head_name']}: gained {', '.join(r['gained']) or '-'}; lost {', '.join(r['lost']) or '-'}")
        bpc = m["heldout_bits_per_char"]
        if bpc["change"] is not None:
            console.print(f"  held-out bits/char {bpc['a']:.3f} -> {bpc['b']:.3f} ({bpc['change']:+.3f})")
        for note in m["not_compared"]:
            console.print(f"  note: {note}")
    console.print(f"{doc['significant']} significant change(s) (q < {doc['alpha']}, |change| >= {doc['min_change']})")
