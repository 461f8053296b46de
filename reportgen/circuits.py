"""What feeds a head: composition measured by removing earlier heads (Elhage et al. 2021; Olsson et al. 2022).

For each role head in layer >= 1, every head of an earlier layer is resample-ablated in turn (its output at each
position taken from another window at the same position; `draws` donors, averaged) and the role head's own role
score (its detector on the same held-out windows, or its probe on repeated sequences) is measured again. An
earlier head is an input when its removal cuts the role's excess over chance by at least half and the paired 95%
CI of the drop lies above 0. One ablation pass scores every later head at once.
"""

from __future__ import annotations

import numpy as np
import torch

from .detectors import batch_stats
from .evidence import Circuit, Edge
from .stats import bootstrap_ci, resample_counts

EDGE_CUT = 0.5  # share of the role's excess over chance an input's removal must remove
DRAWS = 2
BATCH = 32  # windows per pass (resample donors come from the same batch)
CLEAN_BYTES = 256 * 2 ** 20  # most memory kept for the clean pass (`_Clean`); beyond it every pass starts afresh


@torch.no_grad()
def _scores(model, windows: torch.Tensor, codes: torch.Tensor, probes: dict[str, tuple[torch.Tensor, int]],
            vocab_size: int, batch_size: int = BATCH, clean: "_Clean | None" = None,
            layer: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Every window detector (W, L, H) and probe (P, L, H) value, and their chance values, under whatever
    ablation is in force (batches of >= 2 windows: resample donors come from the same batch). With `clean` (the
    unablated pass, `_Clean`) an ablation at `layer` leaves the layers below it as they were: each pass resumes at
    `layer` from its stored input, the weights below copied from the clean pass (the same values bit for bit)."""
    obs: dict[str, list[np.ndarray]] = {}
    chance: dict[str, list[np.ndarray]] = {}
    for k, (ids, c) in enumerate(zip(_split(windows, batch_size), _split(codes, batch_size))):
        stats = batch_stats(_attention(model, ids, clean and (layer, clean.windows[k])), ids, c, vocab_size)
        for name, v in stats.observed.items():
            obs.setdefault(name, []).append(v.numpy())
            chance.setdefault(name, []).append(stats.chance[name].numpy())
    out = {k: np.concatenate(v) for k, v in obs.items()}
    base = {k: np.concatenate(v) for k, v in chance.items()}
    for name, (seqs, period) in probes.items():
        T = seqs.shape[1]
        pos = torch.arange(period, T)
        vals = []
        for k, batch in enumerate(_split(seqs, batch_size)):
            attn = _attention(model, batch, clean and (layer, clean.probes[name][k]))  # (B, L, H, T, S)
            vals.append(attn[..., pos, pos - period + 1].mean(-1).numpy())
        out[name] = np.concatenate(vals)
        base[name] = np.full_like(out[name], float((1.0 / (pos + 1)).mean()))
    return out, base


def _split(x: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, ...]:
    return torch.tensor_split(x, max(1, -(-len(x) // batch_size)))


def _attention(model, ids: torch.Tensor, resume: tuple[int, tuple] | None) -> torch.Tensor:
    """`model.attention(ids)`; with `resume` (layer, (its stored inputs, the clean attention (L, B, H, T, S))) the
    pass starts at that layer, the layers below taken from the clean attention."""
    if not resume:
        return model.attention(ids)
    layer, (inputs, attn) = resume
    return model.attention(ids, out=attn.clone(), start=(layer, inputs[layer]))


class _Clean:
    """The unablated pass of `_scores`, batch by batch: each layer's input and the attention (layer-major), for the
    windows and each probe set."""

    @torch.no_grad()
    def __init__(self, model, windows: torch.Tensor, probes: dict[str, tuple[torch.Tensor, int]], batch_size: int):
        def passes(x):  # the inputs as a pass that keeps the weights computes them (not `layer_inputs`' fused pass)
            return [(c.resid_pre, torch.stack(c.attention)) for c in map(model.run_with_cache, _split(x, batch_size))]

        self.windows = passes(windows)
        self.probes = {name: passes(seqs) for name, (seqs, _) in probes.items()}


def composition(model, windows: torch.Tensor, codes: torch.Tensor, targets: list[tuple[int, int, str]],
                probes: dict[str, tuple[torch.Tensor, int]], vocab_size: int, rng: np.random.Generator,
                draws: int = DRAWS, on_step=None) -> Circuit:
    """Composition edges into role heads `targets` [(layer, head, detector)] from every head of an earlier layer.

    windows and codes (W, T); probes: name -> (sequences (P, T), period) for probe detectors."""
    targets = [t for t in targets if t[0] >= 1]
    if not targets:
        return Circuit(len(windows), draws, [], [])
    H = model.config.n_heads
    clean, chance = _scores(model, windows, codes, probes, vocab_size)
    cfg = model.config
    sequences = len(windows) + sum(len(seqs) for seqs, _ in probes.values())
    size = 4 * sequences * cfg.n_layers * (cfg.n_heads * windows.shape[1] + cfg.embed_size) * windows.shape[1]
    stored = _Clean(model, windows, probes, BATCH) if size <= CLEAN_BYTES else None
    sources = [(l, h) for l in range(max(t[0] for t in targets)) for h in range(H)]
    edges = []
    for src in sources:
        runs = []
        for shift in range(1, draws + 1):
            with model.ablate({src: "resample"}, shift=shift):
                runs.append(_scores(model, windows, codes, probes, vocab_size, clean=stored, layer=src[0])[0])
        for l, h, det in [t for t in targets if t[0] > src[0]]:
            before = clean[det][:, l, h]
            after = np.mean([r[det][:, l, h] for r in runs], axis=0)
            drop = before - after  # per window (or probe)
            low, high, _ = bootstrap_ci(drop[:, None], resample_counts(len(drop), rng))
            excess = float(before.mean() - chance[det][:, l, h].mean())
            cut = float(drop.mean() / excess) if excess > 0 else float("nan")
            edges.append(Edge(f"L{src[0]}H{src[1]}", f"L{l}H{h}", det, float(before.mean()), float(after.mean()),
                              float(chance[det][:, l, h].mean()), cut, float(low[0]), float(high[0]),
                              bool(np.isfinite(cut) and cut >= EDGE_CUT and low[0] > 0)))
        if on_step:
            on_step()
    return Circuit(len(windows), draws, [f"L{l}H{h}" for l, h, _ in targets], edges)
