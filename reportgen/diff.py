"""`reportgen diff A B`: what changed in each head between two runs or checkpoints of one model.

A and B are results folders / results.json files (per-window values are read from the
`windows.npz` written beside results.json) or checkpoints (then analysed first on the same
windows). Per head x tested detector: the change in the held-out statistic with a paired
bootstrap CI over the same windows, a two-sided paired t-test, Benjamini–Hochberg across every
comparison, and a class: appeared / vanished / strengthened / weakened / unchanged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .catalogue import ALPHA, DETECTOR
from .config import display_path
from .errors import ReportgenError
from .outputs import write_json
from .results import SCHEMA_VERSION, ModelResult
from .sides import RunData
from .stats import bh, block_length, block_resample_counts, bootstrap_ci, normal_sf, t_sf

MIN_CHANGE = 0.05  # smallest change in a statistic (attention mass or rate) that counts as a change


def _pairs(a: RunData, b: RunData, force: bool) -> list[tuple[ModelResult, ModelResult]]:
    """Match models by label (or the single model of each side) and refuse different texts."""
    ma, mb = a.run.models, b.run.models
    if len(ma) == 1 and len(mb) == 1:
        pairs = [(ma[0], mb[0])]
    else:
        by_label = {m.label: m for m in mb}
        pairs = [(m, by_label[m.label]) for m in ma if m.label in by_label]
        if not pairs:  # e.g. a checkpoint against a two-language run: pair the one model of each language
            langs = lambda ms: {lang: [m for m in ms if m.language == lang] for lang in {m.language for m in ms}}
            la, lb = langs(ma), langs(mb)
            pairs = [(la[k][0], lb[k][0]) for k in la if k in lb and len(la[k]) == len(lb[k]) == 1]
    if not pairs:
        raise ReportgenError(f"{a.source} and {b.source}: no model label in common to compare")
    for x, y in pairs:
        if x.corpus.sha256 != y.corpus.sha256 and not force:
            raise ReportgenError(f"{a.source} vs {b.source}: model {x.label!r} was analysed on different texts "
                                 f"({x.corpus.description} vs {y.corpus.description}); use --force to compare anyway")
    return pairs


def _roles(m: ModelResult) -> dict[tuple[int, int], set[str]]:
    """Replicated roles (detector names) per (layer, head)."""
    out: dict[tuple[int, int], set[str]] = {}
    for f in m.replicated:
        out.setdefault((f.layer, f.head), set()).add(f.pattern)
    return out


def _paired_changes(diffs: list[np.ndarray], seed: int) -> list[tuple[float, float, float, float]]:
    """Per array of paired per-window differences: its mean, moving-block bootstrap CI and two-sided paired t-test
    p. Arrays of one length share one resample matrix, and their CIs come from one matrix product per 256 of them
    (not one per comparison; the chunks bound the memory of long texts)."""
    out: list = [None] * len(diffs)
    for n in sorted({len(d) for d in diffs}):
        which = [k for k, d in enumerate(diffs) if len(d) == n]
        counts = block_resample_counts(n, np.random.default_rng([seed, n]), block_length(n))  # contiguous windows
        cis = [bootstrap_ci(np.stack([diffs[k] for k in which[lo:lo + 256]], 1), counts, bca=False)[:2]
               for lo in range(0, len(which), 256)]
        low, high = np.concatenate([c[0] for c in cis]), np.concatenate([c[1] for c in cis])
        for k, lo, hi in zip(which, low, high):
            d = diffs[k]
            sd = d.std(ddof=1)
            if sd == 0:
                p = 1.0 if d.mean() == 0 else 0.0
            else:
                p = float(2 * t_sf(abs(d.mean()) / (sd / np.sqrt(n)), n - 1))
            out[k] = (float(d.mean()), float(lo), float(hi), p)
    return out


def _unpaired_change(bx, by_) -> tuple[float, float, float, float]:
    """Change of means with a normal CI built from each run's own CI (conservative when windows differ)."""
    delta = by_.mean - bx.mean
    se = np.hypot((bx.ci_high - bx.ci_low) / 3.92, (by_.ci_high - by_.ci_low) / 3.92)
    p = float(2 * normal_sf(abs(delta) / se)) if se > 0 else (1.0 if delta == 0 else 0.0)
    return delta, delta - 1.96 * se, delta + 1.96 * se, p


def compare(a: RunData, b: RunData, force: bool = False, seed: int = 0) -> dict:
    """The diff document: per model, per head x detector changes, role changes, loss and ablation changes."""
    models = []
    all_p: list[float] = []
    for x, y in _pairs(a, b, force):
        entry = {"label": x.label, "title": x.label if x.label == y.label else f"{x.label} → {y.label}", "a": {"checkpoint": x.checkpoint.path, "step": x.checkpoint.step},
                 "b": {"checkpoint": y.checkpoint.path, "step": y.checkpoint.step, "label": y.label},
                 "comparable": (x.n_layers, x.n_heads) == (y.n_layers, y.n_heads), "not_compared": []}
        # held-out loss is always compared: the causal baseline, else the loss each run measured on its held-out text,
        # else the one recorded at training time
        bpc = [m.baseline_bits_per_char or m.measured_bits_per_char or m.checkpoint.heldout_bits_per_char_at_training
               for m in (x, y)]
        entry["heldout_bits_per_char"] = {"a": bpc[0], "b": bpc[1],
                                          "change": None if None in bpc else bpc[1] - bpc[0]}
        entry["model_changes"] = _model_changes(x, y)
        if not x.ablation or not y.ablation:
            entry["not_compared"].append("no ablation on both sides: ablation effects and the held-out loss's CI are "
                                         "not compared (diff checkpoints with --causal for them); held-out bits/char "
                                         "are each run's own measurement on its held-out text")
        if x.hyperparameters["vocab_size"] != y.hyperparameters["vocab_size"]:
            entry["not_compared"].append("vocabularies differ: class and character statistics are compared by name only")
        if not entry["comparable"]:
            entry["not_compared"].append("layer x head shapes differ: heads cannot be paired; only role prevalence "
                                         "per layer and family is compared")
            entry["changes"] = []
            entry["prevalence"] = {s: _prevalence(m) for s, m in (("a", x), ("b", y))}
            models.append(entry)
            continue
        wa, wb = a.windows.get(x.label, {}), b.windows.get(y.label, {})
        starts_equal = ("__starts__" in wa and "__starts__" in wb and np.array_equal(wa["__starts__"], wb["__starts__"]))
        paired = starts_equal and x.corpus.sha256 == y.corpus.sha256
        if not paired:
            entry["not_compared"].append("per-window values unavailable or from different windows: CIs are unpaired "
                                         "(from each run's own CI), which is conservative")
        entry["paired"] = paired
        ra, rb = _roles(x), _roles(y)
        changes, paired_diffs = [], []
        for hx, hy in zip(x.heads, y.heads):
            key = (hx.layer, hx.head)
            for name, dx in hx.detectors.items():
                bx, by_ = dx["heldout"], hy.detectors.get(name, {}).get("heldout")
                if by_ is None or bx.p is None or not np.isfinite(bx.mean) or not np.isfinite(by_.mean):
                    continue
                if paired and name in wa and name in wb:  # its change and CI come below, with all the others
                    paired_diffs.append((len(changes), wb[name][:, key[0], key[1]].astype(np.float64)
                                         - wa[name][:, key[0], key[1]]))
                    delta = lo = hi = p = float("nan")
                else:
                    delta, lo, hi, p = _unpaired_change(bx, by_)
                changes.append({"layer": key[0], "head": key[1], "head_name": hx.name, "detector": name,
                                "role": DETECTOR[name].role if name in DETECTOR and DETECTOR[name].role else name,
                                "a": bx.mean, "b": by_.mean, "change": delta, "ci_low": lo, "ci_high": hi,
                                "p": p, "role_a": name in ra.get(key, set()), "role_b": name in rb.get(key, set())})
        for (k, _), values in zip(paired_diffs, _paired_changes([d for _, d in paired_diffs], seed)):
            changes[k].update(zip(("change", "ci_low", "ci_high", "p"), values))
        all_p.extend(c["p"] for c in changes)
        entry["changes"] = changes
        role = lambda names: sorted(DETECTOR[n].role if n in DETECTOR else n for n in names)
        entry["role_changes"] = [{"head_name": f"L{l}H{h}", "gained": role(rb.get((l, h), set()) - ra.get((l, h), set())),
                                  "lost": role(ra.get((l, h), set()) - rb.get((l, h), set()))}
                                 for l in range(x.n_layers) for h in range(x.n_heads)
                                 if ra.get((l, h), set()) != rb.get((l, h), set())]
        entry["ablation"] = [{"head_name": r.head_name, "a": ra_.delta_bits_per_char, "b": r.delta_bits_per_char,
                              "a_ci": [ra_.ci_low, ra_.ci_high], "b_ci": [r.ci_low, r.ci_high],
                              "change": r.delta_bits_per_char - ra_.delta_bits_per_char,
                              "separate": r.ci_low > ra_.ci_high or r.ci_high < ra_.ci_low}
                             for r in y.ablation if (ra_ := x.ablation_of(r.layer, r.head)) is not None]
        entry["prevalence"] = {s: _prevalence(m) for s, m in (("a", x), ("b", y))}
        models.append(entry)
    q = bh(np.asarray(all_p, dtype=float)) if all_p else np.array([])
    k = 0
    for entry in models:
        for c in entry["changes"]:
            c["q"] = float(q[k])
            k += 1
            c["status"] = _status(c)
    for entry in models:
        entry["heatmaps"] = _most_changed(entry)
    summary = {status: sum(c["status"] == status for m in models for c in m["changes"])
               for status in ("appeared", "vanished", "strengthened", "weakened")}
    # roles gained and lost by the role rules (what the role list shows), beside the statistics' statuses
    summary["roles_gained"] = sum(len(r["gained"]) for m in models for r in m.get("role_changes", []))
    summary["roles_lost"] = sum(len(r["lost"]) for m in models for r in m.get("role_changes", []))
    return {"schema_version": SCHEMA_VERSION, "a": display_path(a.source), "b": display_path(b.source),
            "summary": summary, "min_change": MIN_CHANGE,
            "alpha": ALPHA, "models": models,
            "significant": sum(c["status"] != "unchanged" for m in models for c in m["changes"])
            + sum(len(m["model_changes"]) for m in models)}


def _most_changed(entry: dict, n: int = 4) -> list[dict]:
    """Up to `n` heads whose statistics changed most (largest significant |change|), each with why it was chosen."""
    best: dict[str, dict] = {}
    for c in entry["changes"]:
        if c["status"] != "unchanged" and abs(c["change"]) > abs(best.get(c["head_name"], {"change": 0.0})["change"]):
            best[c["head_name"]] = c
    chosen = sorted(best.values(), key=lambda c: -abs(c["change"]))[:n]
    return [{"head_name": c["head_name"], "layer": c["layer"], "head": c["head"], "role": c["role"],
             "detector": c["detector"], "status": c["status"], "change": c["change"], "ci_low": c["ci_low"],
             "ci_high": c["ci_high"], "figure": None} for c in chosen]


def _model_changes(x: ModelResult, y: ModelResult) -> list[str]:
    """Changes of the model itself that count as changes: architecture, vocabulary, held-out loss beyond its CIs."""
    out = []
    for key in ("n_layers", "n_heads", "embed_size", "max_context_len", "mlp_hidden_size", "with_residuals"):
        if x.hyperparameters.get(key) != y.hyperparameters.get(key):
            out.append(f"architecture: {key} {x.hyperparameters.get(key)} -> {y.hyperparameters.get(key)}")
    if x.hyperparameters.get("vocab_size") != y.hyperparameters.get("vocab_size"):
        out.append(f"vocabulary: {x.hyperparameters.get('vocab_size')} -> {y.hyperparameters.get('vocab_size')} symbols")
    cis = [(m.baseline_ci_low, m.baseline_ci_high) for m in (x, y)]
    if all(lo is not None and hi is not None for lo, hi in cis):
        (la, ha), (lb, hb) = cis
        if hb < la or lb > ha:  # the two 95% intervals do not overlap
            out.append(f"held-out bits/char {x.baseline_bits_per_char:.3f} [{la:.3f}, {ha:.3f}] -> "
                       f"{y.baseline_bits_per_char:.3f} [{lb:.3f}, {hb:.3f}]")
    return out


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


def _prevalence(m: ModelResult) -> dict:
    """Replicated roles per layer and per family."""
    per_layer = [sorted({f.role for f in m.replicated if f.layer == l}) for l in range(m.n_layers)]
    fams: dict[str, int] = {}
    for f in m.replicated:
        fams[f.family] = fams.get(f.family, 0) + 1
    return {"per_layer": per_layer, "families": fams}


def check_out(out: Path) -> None:
    """`--out` must be new, empty or a previous diff output; diff writes only its four files and figures/ there."""
    ours = {"diff.json", "diff.html", "diff.pdf", "style.css", "figures"}
    if out.exists() and (not out.is_dir() or (any(p.name not in ours for p in out.iterdir())
                                              and not (out / "diff.json").exists())):
        raise ReportgenError(f"{out}: holds files reportgen diff did not write; choose a new or empty --out")
    figures = out / "figures"
    if figures.exists() and (not figures.is_dir() or any(not p.name.endswith(".png") for p in figures.iterdir())):
        raise ReportgenError(f"{figures}: not a folder of diff figures; choose a new or empty --out")


def mean_attention(doc: dict, a: RunData, b: RunData) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per compared model label, the held-out mean attention (L, H, T, S) of both sides, where both have it."""
    out = {}
    for m in doc["models"]:
        ma, mb = a.mean_attn.get(m["label"]), b.mean_attn.get(m["b"].get("label", m["label"]))
        if ma is not None and mb is not None and ma.shape == mb.shape:
            out[m["label"]] = (ma, mb)
    return out


def render(doc: dict, out: Path, pdf: bool = True,
           mean_attn: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> None:
    """Write diff.json, diff.html, heatmaps of the heads that changed most (from `mean_attn`, see
    `mean_attention`) and (optionally) diff.pdf into out, atomically per file."""
    import datetime as dt
    import shutil

    from . import __version__
    from .config import template_dir
    from .outputs import write_text_atomic
    from .pages import Common, Footer
    from .site import make_env, write_pdf

    check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    _write_heatmaps(doc, out, mean_attn or {})
    write_json(out / "diff.json", doc)
    nav = [("../index.html", "Overview")] if (out.parent / "index.html").exists() else []
    common = Common(nav + [("diff.html", "Diff")],
                    Footer(dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), __version__, 0, "diff.json"))
    html = make_env().get_template("diff.html.jinja2").render(d=doc, common=common, page="diff.html",
                                                              summary_sentence=summary_sentence)
    write_text_atomic(out / "diff.html", html)
    shutil.copy(template_dir() / "style.css", out / "style.css")
    if pdf:
        write_pdf(html, out, out / "diff.pdf")


def _write_heatmaps(doc: dict, out: Path, mean_attn: dict) -> None:
    """Side-by-side mean attention (A | B | B − A) of the heads that changed most, into out/figures/; the previous
    diff's figures (listed in its diff.json, so written by reportgen) are removed first."""
    import json

    from .figures import FigureWriter

    figures = out / "figures"
    try:
        old = json.loads((out / "diff.json").read_text(encoding="utf-8"))
        stale = [h.get("figure") for m in old.get("models", []) for h in m.get("heatmaps", [])]
    except (OSError, ValueError, AttributeError):
        stale = []
    for name in stale:
        if isinstance(name, str) and name.startswith("figures/") and "/" not in name[8:] and name.endswith(".png"):
            (out / name).unlink(missing_ok=True)
    writer, shown = FigureWriter(figures), []
    for m in doc["models"]:
        pair = mean_attn.get(m["label"])
        for h in m.get("heatmaps", []) if pair is not None else []:
            shown.append((h, writer.add("diff_head_figure",
                                        f"{m['label']} {h['head_name']}: {h['role']} {h['status']} "
                                        f"({h['change']:+.3f}, 95% CI {h['ci_low']:+.3f} to {h['ci_high']:+.3f})",
                                        pair[0][h["layer"], h["head"]], pair[1][h["layer"], h["head"]],
                                        f"A: step {m['a']['step']}", f"B: step {m['b']['step']}")))
    if shown:  # drawn in parallel, written under names hashed from their inputs
        names = writer.run()
        for h, k in shown:
            h["figure"] = f"figures/{names[k]}"


def print_summary(doc: dict) -> None:
    """A rich table of every significant change and role change, on stdout."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for m in doc["models"]:
        table = Table(title=f"{m.get('title', m['label'])}: step {m['a']['step']} -> step {m['b']['step']}")
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
        for change in m.get("model_changes", []):
            console.print(f"  changed: {change}", markup=False)
        for note in m["not_compared"]:
            console.print(f"  note: {note}", markup=False)
    console.print(f"{doc['significant']} significant change(s) (q < {doc['alpha']}, |change| >= {doc['min_change']})")
    console.print(summary_sentence(doc["summary"]), markup=False)


def summary_sentence(summary: dict) -> str:
    """The role list's totals and the statistics' statuses in one sentence, so neither contradicts the other."""
    gained, lost = summary.get("roles_gained", 0), summary.get("roles_lost", 0)
    return (f"Roles: {lost} lost and {gained} gained by the role rules (each listed per head); of these, "
            f"{summary['vanished']} vanished and {summary['appeared']} appeared with a significant change of their "
            f"statistic. Other statistics: {summary['strengthened']} strengthened, {summary['weakened']} weakened.")
