"""Worked examples: for a role head, the query in a short held-out passage where the head puts the most
attention on its role's target, with the keys it reads most — the report's "reading 'r' in 'hello wor',
the head sends 0.62 to 'w'"."""

from __future__ import annotations

import torch

from .catalogue import DETECTOR
from .checkpoint import ModelBundle
from .classes import CLASS_NAMES, CharClasses
from .detectors import SKIP
from .nulls import target_masks
from .evidence import WorkedExample


def target_mask(pattern: str, ids: torch.Tensor, codes: torch.Tensor) -> torch.Tensor | None:
    """Key mask (T, S) of a detector's target set for one passage (ids, codes: (1, T)); None if it has none."""
    T = ids.shape[1]
    i, j = torch.arange(T).view(T, 1), torch.arange(T).view(1, T)
    kind = DETECTOR[pattern].kind if pattern in DETECTOR else ""
    if kind in ("offset", "argmax"):
        return j == i - int(pattern.split("_")[1])
    if kind == "class":
        return (codes[0] == CLASS_NAMES.index(pattern.removeprefix("class_"))).view(1, T) & (j <= i)
    if pattern == "sink":
        return (j == 0) & (i >= 0)
    masks = target_masks(ids, codes)
    name = "induction" if kind == "probe" else pattern
    return masks[name][0] if name in masks else None


@torch.no_grad()
def worked_example(bundle: ModelBundle, classes: CharClasses, text: str, layer: int, head: int,
                   pattern: str) -> WorkedExample | None:
    """The query where the head's mass on its target is largest (after the first SKIP characters), among the queries
    whose targets are all >= 2 back when there are any (there the role and a previous-character head differ)."""
    if len(text) <= SKIP + 1:
        return None
    ids = torch.tensor([bundle.tokenizer.tokenize(text)])
    codes = torch.as_tensor(classes.lookup())[ids]
    mask = target_mask(pattern, ids, codes)
    if mask is None:
        return None
    _, attn = bundle.model(ids, return_attention_weights=True)
    a = attn[layer, 0, head]  # (T, S)
    mass = (a * mask).sum(-1)
    mass[:SKIP] = -1
    T = mask.shape[0]
    near = mask & (torch.arange(T).view(T, 1) - torch.arange(T).view(1, T) <= 1)  # targets the query itself or 1 back
    apart = ~near.any(-1) & mask.any(-1)  # queries where the role and a previous-character reading differ
    apart[:SKIP] = False
    if DETECTOR.get(pattern) is not None and DETECTOR[pattern].kind not in ("offset", "argmax") and bool(apart.any()):
        mass = torch.where(apart, mass, torch.full_like(mass, -1))  # targets >= 2 back only, when there are such
    q = int(mass.argmax())
    keys = torch.argsort(a[q], descending=True)[:3].tolist()
    return WorkedExample(q, text[q], text[max(0, q - 24):q + 1], float(mass[q]),
                         [(k, text[k], float(a[q, k]), bool(mask[q, k])) for k in keys],
                         [float(w) for w in a[q, :q + 1]])
