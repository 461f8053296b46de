"""Write inputs/models/README.md from the shipped checkpoints: held-out bits/char on every held-out
window and in-context copying (loss on the first vs second copy of repeated held-out passages).

Every number in the file is computed here from the checkpoints; run it again after retraining.
Usage: python scripts/model_card.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reportgen.capture import encode, natural_probes  # noqa: E402
from reportgen.checkpoint import load_checkpoint  # noqa: E402
from reportgen.config import latest_checkpoint, seed_folders  # noqa: E402
from reportgen.corpora import bible_split  # noqa: E402
from reportgen.stats import bootstrap_ci  # noqa: E402
from reportgen.train import bits_per_char, evenly_spaced_windows  # noqa: E402
from reportgen.ablation import nll_bits  # noqa: E402

MODELS = ROOT / "inputs" / "models"
NAMES = {"en": "English (King James Bible)", "he": "Hebrew (consonantal Hebrew Bible)"}


def copying(bundle, split) -> tuple[int, float, float, float, float]:
    """(period, first-copy bits/char, second-copy bits/char, CI of second minus first) on 256 repeated passages."""
    ids = encode(bundle, split.heldout, "held-out books")
    seqs, period = natural_probes(ids, 256, bundle.config.max_context_len)
    nll = nll_bits(bundle.model, torch.as_tensor(seqs)).numpy()  # (P, T-1)
    first, second = nll[:, : period - 1].mean(1), nll[:, period:].mean(1)
    lo, hi, _ = bootstrap_ci((second - first)[:, None], np.random.default_rng(0))
    return period, float(first.mean()), float(second.mean()), float(lo[0]), float(hi[0])


def heldout_bits(bundle, split) -> float:
    """Bits/char on every held-out window."""
    ids = torch.as_tensor(encode(bundle, split.heldout, "held-out books"))
    return bits_per_char(bundle.model, evenly_spaced_windows(ids, bundle.config.max_context_len + 1))


def card(language: str) -> list[str]:
    """Markdown lines for one language's checkpoints and its other seeds."""
    split = bible_split(language)
    lines = [f"## {NAMES[language]}", "", f"Corpus: {split.description}.", ""]
    lines += ["| checkpoint | step | held-out bits/char (all held-out windows) | copying: second − first copy "
              "(95% CI) | size |", "|---|---|---|---|---|"]
    final = None
    for path in sorted((MODELS / language).glob("step*.pt")):
        bundle = load_checkpoint(path)
        _, first, second, lo, hi = copying(bundle, split)
        lines.append(f"| `{path.relative_to(ROOT)}` | {bundle.metadata['step']} | {heldout_bits(bundle, split):.3f} | "
                     f"{second - first:+.3f} ({lo:+.3f} to {hi:+.3f}) | {path.stat().st_size / 1e6:.1f} MB |")
        final = bundle
    cfg = final.config
    period, first, second, lo, hi = copying(final, split)
    lines += ["", f"Final model: {cfg.n_layers} layers × {cfg.n_heads} heads, D = {cfg.embed_size}, context "
              f"{cfg.max_context_len}, MLP {cfg.mlp_hidden_size}, residuals {'on' if cfg.with_residuals else 'off'}, "
              f"vocabulary {cfg.vocab_size} symbols, seed {final.metadata['seed']}.", "",
              f"In-context copying (256 held-out passages of {period} characters, each repeated twice): "
              f"{first:.3f} bits/char on the first copy, {second:.3f} on the second copy "
              f"(difference {second - first:+.3f}, 95% CI {lo:+.3f} to {hi:+.3f}).", ""]
    seeds = seed_folders(MODELS / language)
    if seeds:
        lines += [f"Other seeds of the same recipe (final checkpoints only; a run measures them beside seed 0, see "
                  f"the main README):", "",
                  "| seed | checkpoint | held-out bits/char (all held-out windows) | copying: first → second copy "
                  "(difference, 95% CI) | size |", "|---|---|---|---|---|"]
        for folder in seeds:
            path = latest_checkpoint(folder)
            bundle = load_checkpoint(path)
            _, first, second, lo, hi = copying(bundle, split)
            lines.append(f"| {bundle.metadata['seed']} | `{path.relative_to(ROOT)}` | {heldout_bits(bundle, split):.3f} "
                         f"| {first:.3f} → {second:.3f} ({second - first:+.3f}, {lo:+.3f} to {hi:+.3f}) | "
                         f"{path.stat().st_size / 1e6:.1f} MB |")
        lines.append("")
    return lines


def saved_at(language: str) -> str:
    """The --save-at list that reproduces the shipped series (every shipped step but the last)."""
    steps = sorted(int(p.stem.removeprefix("step")) for p in (MODELS / language).glob("step*.pt"))
    return ",".join(str(s) for s in steps[:-1])


def main() -> None:
    torch.manual_seed(0)
    lines = ["# Shipped models", "",
             "Trained on this repository's 2-core CPU with `reportgen train` (deterministic for the seed).",
             "Reproduce each folder with:", "", "```sh",
             *[f"reportgen train --language {lang} --steps 5000 --save-at {saved_at(lang)} --threads 1 --seed 0 "
               f"--out inputs/models/{lang}" for lang in ("en", "he")],
             "# other seeds of the same recipe (final checkpoint only), S = 1, 2, ... (the tables below list those shipped):",
             "reportgen train --language en --steps 5000 --threads 1 --seed $S --out inputs/models/en/seed$S",
             "reportgen train --language he --steps 5000 --threads 1 --seed $S --out inputs/models/he/seed$S",
             "```", "",
             "Defaults: 4 layers, 4 heads, D = 128, context 128, MLP 512, residuals on, batch 32, AdamW at 2e-3 with",
             "200 warm-up steps and cosine decay. Weights are stored as float16. Numbers below were computed by",
             "`python scripts/model_card.py`.", ""]
    for language in ("en", "he"):
        lines += card(language)
    (MODELS / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
