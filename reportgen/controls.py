"""Controls for the roles: a randomly initialised model whose attention is as sharp as the trained
model's, and the trained model on character-shuffled text.

Default initialisation gives near-uniform attention, against which any trained head looks special;
so the random model's query weights are scaled until its median normalised entropy matches the
trained model's. Its heads' strongest effect per detector is what chance structure in sharp
attention alone can reach; a trained role no stronger than that is flagged. Shuffling characters
inside each window keeps every character and position but destroys words: positional and
identity roles should survive it, roles that need word structure should not.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from .capture import capture
from .catalogue import ALPHA, FAMILY, ROLE_DETECTORS, roles_of
from .detectors import SKIP
from .device import device_of, place
from .evidence import ControlResult, Controls
from .stats import SplitStats, add_q_values, split_stats

if TYPE_CHECKING:
    from .config import RunConfig
    from .stages import Prepared


def control_result(stats: SplitStats, n_layers: int, n_heads: int, **extra) -> ControlResult:
    """Roles found on a control (q within the control's own BH family), split positional vs content, and
    each role detector's strongest effect over the control's heads (mean minus its strictest null)."""
    add_q_values([stats])
    roles = [(l, h, d) for l in range(n_layers) for h in range(n_heads) for d in roles_of(stats, l, h)]
    positional = [f"L{l}H{h} {d.role}" for l, h, d in roles if FAMILY[d.family].positional]
    content = [f"L{l}H{h} {d.role}" for l, h, d in roles if not FAMILY[d.family].positional]
    tested = sum(int(np.isfinite(f["p"]).sum()) for f in stats.values.values() if "p" in f)
    discoveries = int(sum(int((np.nan_to_num(f["q"], nan=1) < ALPHA).sum()) for f in stats.values.values() if "q" in f))
    max_effect = {}
    for d in ROLE_DETECTORS:
        f = stats.values.get(d.name)
        if f is None:
            continue
        null = f["chance"]
        for k in ("positional", "swap", "structure"):
            if k in f:
                null = np.fmax(null, f[k])
        effect = f["mean"] - null
        if np.isfinite(effect).any():
            max_effect[d.name] = float(np.nanmax(effect))
    return ControlResult(positional, content, tested, discoveries, max_effect=max_effect, **extra)


@torch.no_grad()
def median_entropy(model, windows: torch.Tensor) -> float:
    """Median over heads of the normalised attention entropy H_i / ln(i+1), averaged over queries i >= SKIP."""
    _, attn = model(windows, return_attention_weights=True)  # (L, B, H, T, S)
    T = attn.shape[-1]
    ent = torch.special.entr(attn).sum(-1)[..., SKIP:] / torch.arange(SKIP + 1, T + 1).log()
    return float(ent.mean((1, 3)).median())


@torch.no_grad()
def sharpness_matched(model, windows: torch.Tensor, target: float, steps: int = 14) -> float:
    """Scale every head's query weights (in place) until the median normalised entropy on `windows` is
    `target` (bisection on log2 of the scale in [-4, 10]); returns the scale."""
    hs = model.config.head_size
    base = [(kqv.weight[hs:2 * hs].clone(), kqv.bias[hs:2 * hs].clone())
            for layer in model.layers for kqv in layer.causal_attention.kqv_matrices]

    def set_scale(scale: float) -> float:
        kqvs = [kqv for layer in model.layers for kqv in layer.causal_attention.kqv_matrices]
        for kqv, (w, b) in zip(kqvs, base):
            kqv.weight[hs:2 * hs] = w * scale
            kqv.bias[hs:2 * hs] = b * scale
        return median_entropy(model, windows)

    lo, hi = -4.0, 10.0
    if set_scale(2 ** lo) <= target:
        return 2 ** lo
    for _ in range(steps):
        mid = (lo + hi) / 2
        if set_scale(2 ** mid) > target:  # still flatter than the trained model: sharpen more
            lo = mid
        else:
            hi = mid
    set_scale(2 ** hi)
    return 2 ** hi


def run_controls(prep: "Prepared", cfg: "RunConfig", index: int, stats: dict, rng: np.random.Generator,
                 progress) -> Controls:
    """Both controls on the first `cfg.control_windows` held-out windows."""
    bundle, classes = prep.bundle, prep.classes
    L, H, T = bundle.config.n_layers, bundle.config.n_heads, bundle.config.max_context_len
    ids = prep.ids["heldout"]
    task = progress.add_task(f"{prep.spec.label}: controls", total=2)
    ctrl_ids = ids[: min(len(ids), cfg.control_windows * T)]
    n_ctrl = len(ctrl_ids) // T
    trained = float(np.nanmedian(stats["heldout"].values["entropy"]["mean"]))
    torch.manual_seed(cfg.seed + 1000 + index)
    random_model = place(type(bundle.model).from_config(bundle.config).eval(), device_of(bundle.model))
    probe = torch.as_tensor(ctrl_ids[: min(n_ctrl, 8) * T].reshape(-1, T))
    scale = sharpness_matched(random_model, probe, trained)
    random_bundle = type(bundle)(random_model, bundle.tokenizer, bundle.path, bundle.sha256, bundle.language, {})
    random_stats = split_stats(capture(random_bundle, ctrl_ids, classes, n_samples=0), {},
                               np.random.default_rng([cfg.seed, index, 12]))
    matched = float(np.nanmedian(random_stats.values["entropy"]["mean"]))
    random_init = control_result(random_stats, L, H, scale=scale, median_entropy=matched)
    progress.advance(task)
    shuffled = ctrl_ids[: n_ctrl * T].reshape(n_ctrl, T).copy()  # (W, T)
    for row in shuffled:  # characters shuffled within each window: positions kept, content broken
        rng.shuffle(row)
    shuffled_stats = split_stats(capture(bundle, shuffled.ravel(), classes, n_samples=0), {},
                                 np.random.default_rng([cfg.seed, index, 13]))
    progress.advance(task)
    return Controls(random_init, control_result(shuffled_stats, L, H), n_ctrl,
                    trained_median_entropy=trained if math.isfinite(trained) else None)
