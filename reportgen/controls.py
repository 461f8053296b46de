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
from .catalogue import ALPHA, FAMILY, ROLE_DETECTORS, role_label, roles_of
from .detectors import SKIP
from .device import device_of, place
from .evidence import ControlResult, Controls
from .roles import random_repeats
from .stats import SplitStats, add_q_values, split_stats

if TYPE_CHECKING:
    from .config import RunConfig
    from .stages import Prepared


def control_result(stats: SplitStats, n_layers: int, n_heads: int, olsson=None, **extra) -> ControlResult:
    """Roles found on a control (q within the control's own BH family), split positional vs content, and
    each role detector's strongest effect over the control's heads (mean minus its strictest null).
    `olsson(layer, head)`: whether the head passes the random-sequence induction rule, for its role labels
    (default: on the control's own statistics, which have no probes: never)."""
    add_q_values([stats])
    olsson = olsson or (lambda l, h: random_repeats({"control": stats}, l, h))
    roles = [(l, h, d) for l in range(n_layers) for h in range(n_heads) for d in roles_of(stats, l, h)]
    positional = [f"L{l}H{h} {role_label(d, olsson(l, h))}" for l, h, d in roles if FAMILY[d.family].positional]
    content = [f"L{l}H{h} {role_label(d, olsson(l, h))}" for l, h, d in roles if not FAMILY[d.family].positional]
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
    attn = model.attention(windows).transpose(0, 1)  # (L, B, H, T, S): no logits, no last MLP
    T = attn.shape[-1]
    ent = torch.special.entr(attn).sum(-1)[..., SKIP:] / torch.arange(SKIP + 1, T + 1).log()
    return float(ent.mean((1, 3)).median())


@torch.no_grad()
def sharpness_matched(model, windows: torch.Tensor, target: float, steps: int = 14,
                      bracket: tuple[float, float] = (-4.0, 10.0)) -> float:
    """Scale every head's query weights (in place) until the median normalised entropy on `windows` is
    `target` (bisection on log2 of the scale in `bracket`); returns the scale."""
    hs = model.config.head_size
    base = [(kqv.weight[hs:2 * hs].clone(), kqv.bias[hs:2 * hs].clone())
            for layer in model.layers for kqv in layer.causal_attention.kqv_matrices]

    def set_scale(scale: float) -> float:
        kqvs = [kqv for layer in model.layers for kqv in layer.causal_attention.kqv_matrices]
        for kqv, (w, b) in zip(kqvs, base):
            kqv.weight[hs:2 * hs] = w * scale
            kqv.bias[hs:2 * hs] = b * scale
        return median_entropy(model, windows)

    lo, hi = bracket
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


def random_draw(prep: "Prepared", cfg: "RunConfig", index: int, draw: int, ctrl_ids: np.ndarray, trained: float,
                near: float | None = None) -> ControlResult:
    """One random-init draw: a freshly initialised model (torch seed from the run's seed, the model's index and
    the draw), its query weights scaled to the trained model's median entropy, captured on `ctrl_ids` (W*T,).
    `near`: the log2 scale of an earlier draw; draws of one shape need nearly the same scale (within +-0.1 on
    the shipped models), so the bisection searches +-0.5 around it in 6 steps (1/64 in log2) instead of 14, on 4
    probe windows instead of 8: on the shipped models every draw's median entropy on the control windows stays
    within 0.02 of the trained model's (draw 0, matched on 8: within 0.005); each draw's is recorded."""
    bundle, classes = prep.bundle, prep.classes
    L, H, T = bundle.config.n_layers, bundle.config.n_heads, bundle.config.max_context_len
    torch.manual_seed(cfg.seed + 1000 + index + 7919 * draw)  # draw 0: the single draw of earlier versions
    random_model = place(type(bundle.model).from_config(bundle.config).eval(), device_of(bundle.model))
    probe = torch.as_tensor(ctrl_ids[: min(len(ctrl_ids) // T, 8) * T].reshape(-1, T))  # (8, T)
    scale = None if near is None else sharpness_matched(random_model, probe[:4], trained, 6, (near - .5, near + .5))
    if scale is None or abs(math.log2(scale) - near) > 0.49:  # first draw, or the match lies outside the bracket
        scale = sharpness_matched(random_model, probe, trained)
    random_bundle = type(bundle)(random_model, bundle.tokenizer, bundle.path, bundle.sha256, bundle.language, {})
    random_stats = split_stats(capture(random_bundle, ctrl_ids, classes, n_samples=0), {},
                               np.random.default_rng([cfg.seed, index, 12] + ([draw] if draw else [])))
    matched = float(np.nanmedian(random_stats.values["entropy"]["mean"]))
    return control_result(random_stats, L, H, scale=scale, median_entropy=matched)


def pooled(draws: list[ControlResult]) -> ControlResult:
    """The random-init control over its draws: roles of every draw (tagged with the draw when there are several),
    tests and discoveries summed, median scale and entropy, and per detector the high end over draws."""
    if len(draws) == 1:
        return draws[0]
    tag = lambda roles, k: [f"{r} (draw {k + 1})" for r in roles]  # noqa: E731
    ceiling: dict[str, float] = {}
    for d in draws:
        for name, v in d.max_effect.items():
            ceiling[name] = max(ceiling.get(name, -math.inf), v)
    return ControlResult([r for k, d in enumerate(draws) for r in tag(d.positional_roles, k)],
                         [r for k, d in enumerate(draws) for r in tag(d.content_roles, k)],
                         sum(d.tests for d in draws), sum(d.discoveries_q05 for d in draws), ceiling,
                         float(np.median([d.scale for d in draws])),
                         float(np.median([d.median_entropy for d in draws])), draws=list(draws))


def run_controls(prep: "Prepared", cfg: "RunConfig", index: int, stats: dict, rng: np.random.Generator,
                 progress) -> Controls:
    """Both controls on the first `cfg.control_windows` held-out windows; the random-init one drawn
    `cfg.control_draws` times. `stats` must carry the run's q-values (the shuffled control's role labels ask
    whether the trained head passes the random-sequence induction rule)."""
    return finish_controls(measure_controls(prep, cfg, index, stats, rng, progress), stats)


def finish_controls(measured: tuple, stats: dict) -> Controls:
    """The `Controls` from `measure_controls`' output, once `stats` carry the run's q-values."""
    random_init, shuffled_stats, n_ctrl, trained, (L, H) = measured
    shuffled_text = control_result(shuffled_stats, L, H, lambda l, h: random_repeats(stats, l, h))
    return Controls(random_init, shuffled_text, n_ctrl, trained_median_entropy=trained if math.isfinite(trained) else None)


def measure_controls(prep: "Prepared", cfg: "RunConfig", index: int, stats: dict, rng: np.random.Generator,
                     progress) -> tuple:
    """What `run_controls` measures, which needs no q-values of the trained model (its median entropy only): the
    random-init draws pooled, the shuffled text's statistics, the windows, the trained entropy and the shape."""
    bundle, classes = prep.bundle, prep.classes
    L, H, T = bundle.config.n_layers, bundle.config.n_heads, bundle.config.max_context_len
    ids = prep.ids["heldout"]
    task = progress.add_task(f"{prep.spec.label}: controls", total=cfg.control_draws + 1)
    ctrl_ids = ids[: min(len(ids), cfg.control_windows * T)]
    n_ctrl = len(ctrl_ids) // T
    ctrl_ids = ctrl_ids[: n_ctrl * T]
    trained = float(np.nanmedian(stats["heldout"].values["entropy"]["mean"]))
    draws: list[ControlResult] = []
    for k in range(cfg.control_draws):
        near = math.log2(draws[0].scale) if draws else None
        draws.append(random_draw(prep, cfg, index, k, ctrl_ids, trained, near))
        progress.advance(task)
    random_init = pooled(draws)
    shuffled = ctrl_ids[: n_ctrl * T].reshape(n_ctrl, T).copy()  # (W, T)
    for row in shuffled:  # characters shuffled within each window: positions kept, content broken
        rng.shuffle(row)
    shuffled_stats = split_stats(capture(bundle, shuffled.ravel(), classes, n_samples=0), {},
                                 np.random.default_rng([cfg.seed, index, 13]))
    progress.advance(task)
    return random_init, shuffled_stats, n_ctrl, trained, (L, H)
