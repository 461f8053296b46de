"""Evidence panels: for each headline role, one legible heatmap on a held-out passage chosen to show that role.

The attention is computed at render time from the explorer's copy of the model (webmodel's script: the weights every
layer's attention needs), in float64 as the explorer page computes it, on the held-out text that script carries
(a window of the full context) and on the same window with its last characters repeated (copying and induction).
The panel is the `WINDOW` characters ending at the query where the head puts the most attention on its role's
targets within the window, preferring queries whose targets lie two or more characters back (there the role and a
previous-character head differ), in a window that starts `SKIP` or more characters into the passage (the first
queries of an input draw extra attention); copying and induction roles are shown on the repeated passage.
Targets follow the character classes the run used (the user's `class_overrides` and `vowels` included), and a role
from one of the user's hypotheses marks that hypothesis' own keys for the queries it is about.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import numpy as np

WINDOW = 20  # characters per panel: upright character ticks of 8 pt or more at print size
REPEAT = WINDOW // 2  # characters repeated at the end of the passage: a panel holds both copies
SKIP = 8  # as keysets.SKIP: the first queries see tiny prefixes
COPYING = ("induction", "probe_random", "probe_natural")  # roles shown on the repeated passage


@dataclass(frozen=True)
class Panel:
    """What one evidence panel shows: a window of a passage, the head's attention inside it, the role's targets."""

    caption: str  # where the passage comes from and what the last row is
    text: str  # the window's characters
    attn: np.ndarray  # (n, n) the head's attention among the window's characters (rows: queries)
    marks: np.ndarray  # (n, n) bool: the role's target cells
    mass: float  # the last query's attention on its targets inside the window


def read_script(text: str) -> dict:
    """The model record of an explorer model script (webmodel.model_script: its third line assigns it)."""
    line = text.splitlines()[2]
    return json.loads(line.split(" = ", 1)[1].rstrip().removesuffix(";"))


class ScriptModel:
    """The attention of every head of the explorer's copy of a model, on any text in its vocabulary."""

    def __init__(self, record: dict):
        self.rec = record
        flat = np.frombuffer(base64.b64decode(record["data"]), "<f2" if record["dtype"] == "float16" else "<f4")
        flat = flat.astype(np.float64)
        self.w = {n: flat[o:o + int(np.prod(s))].reshape(s) for n, s, o in record["tensors"]}
        self.stoi = {s: i for i, s in enumerate(record["vocab"]) if len(s) == 1}

    def readable(self, text: str) -> bool:
        return 0 < len(text) <= self.rec["context"] and all(c in self.stoi for c in text)

    def attention(self, text: str) -> np.ndarray:
        """(L, H, T, T) attention weights, row i = query i."""
        import torch

        erf = lambda v: torch.erf(torch.from_numpy(v)).numpy()  # noqa: E731  (exact, float64)
        r, w = self.rec, self.w
        L, H, hs, n = r["n_layers"], r["n_heads"], r["head_size"], len(text)
        ids = [self.stoi[c] for c in text]
        x = w["embed.token_embeddings.weight"][ids] + w["embed.position_embeddings.weight"][:n]
        future = np.triu(np.ones((n, n), bool), 1)
        out = np.zeros((L, H, n, n))
        for l in range(L):
            p = f"layers.{l}."
            a = _norm(x, w[p + "layer_norm_1.weight"], w[p + "layer_norm_1.bias"], r["eps"][l][0])
            ys = []
            for h in range(H):
                name = f"{p}causal_attention.kqv_matrices.{h}"
                kqv = a @ w[name + ".weight"].T + w[name + ".bias"]  # k, q, v in that order
                s = (kqv[:, hs:2 * hs] / np.sqrt(hs)) @ kqv[:, :hs].T
                s[future] = -np.inf
                e = np.exp(s - s.max(1, keepdims=True))
                out[l, h] = e / e.sum(1, keepdims=True)
                ys.append(out[l, h] @ kqv[:, 2 * hs:])
            if l == L - 1:
                break
            res = r["with_residuals"][l]
            o = np.concatenate(ys, 1) @ w[p + "causal_attention.proj.weight"].T + w[p + "causal_attention.proj.bias"]
            x = x + o if res else o
            hid = _norm(x, w[p + "layer_norm_2.weight"], w[p + "layer_norm_2.bias"], r["eps"][l][1])
            hid = hid @ w[p + "mlp.i2h.weight"].T + w[p + "mlp.i2h.bias"]
            o = (0.5 * hid * (1 + erf(hid / np.sqrt(2)))) @ w[p + "mlp.h2o.weight"].T + w[p + "mlp.h2o.bias"]
            x = x + o if res else o
        return out


def _norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    m = x.mean(1, keepdims=True)
    return (x - m) / np.sqrt(((x - m) ** 2).mean(1, keepdims=True) + eps) * g + b


def passages(model: ScriptModel) -> list[tuple[str, str]]:
    """(description, text): the script's held-out window, and that window with its last `REPEAT` characters
    repeated at its end (cut at the front to fit the context)."""
    held = next((p["text"] for p in model.rec["passages"] if p["caption"].startswith("held-out window")), "")
    out = [("a held-out passage", held)] if model.readable(held) else []
    if len(held) > 2 * REPEAT + SKIP:
        base = held[:model.rec["context"] - REPEAT]
        out.append((f"a held-out passage whose last {REPEAT} characters are then repeated", base + base[-REPEAT:]))
    return [(d, t) for d, t in out if model.readable(t)]


def class_codes(vocab: list[str], language: str, classes: dict[str, str] | None = None) -> np.ndarray:
    """Class code (classes.CLASS_NAMES) of each vocabulary symbol as a run used it: `classes` is the run's record
    (ModelResult.classes: display name -> characters, after the user's `class_overrides` and `vowels`); symbols it
    does not list keep the language's default class."""
    from .classes import CLASS_NAMES, CharClasses
    from .languages import LANGUAGE

    codes = CharClasses.for_vocab(vocab, language).lookup().copy()
    lang = LANGUAGE.get(language)
    name_of = {n: n for n in CLASS_NAMES} | {"letter": "consonant"}  # a language without vowels shows "letter"
    name_of |= {lang.class_label(n): n for n in CLASS_NAMES} if lang else {}
    at = {c: i for i, c in enumerate(vocab)}
    for label, chars in (classes or {}).items():
        name = name_of.get(label, name_of.get(label.split(" (")[0]))
        for c in chars if name else ():
            if c in at:
                codes[at[c]] = CLASS_NAMES.index(name)
    return codes


def role_panel(model: ScriptModel, texts: list[tuple[str, str]], layer: int, head: int, pattern: str,
               language: str, attn: dict | None = None, codes: np.ndarray | None = None,
               hypothesis=None) -> Panel | None:
    """The window of one of `texts` that shows the head's role best (module docstring); None where the role has no
    target set or no passage has a target. `attn`: text -> its attention, reused between heads; `codes`: the run's
    class of each vocabulary symbol (`class_codes`; default: the language's classes); `hypothesis`: a
    hypotheses.Hypothesis whose role this is: its own queries and keys are the targets."""
    import torch

    from .catalogue import DETECTOR
    from .examples import target_mask

    if hypothesis is not None:  # its keys are read like the built-in detectors it is judged like
        kind = {"offset": "offset", "class": "class"}.get(hypothesis.keys, "target")
    else:
        kind = DETECTOR[pattern].kind if pattern in DETECTOR else ""
    if pattern in COPYING:  # copying is shown where there is something to copy: the repeated passage
        texts = [t for t in texts if "repeated" in t[0]] or texts
    codes_of = class_codes(model.rec["vocab"], language) if codes is None else codes
    attn = {} if attn is None else attn
    best = None
    for desc, text in texts:
        if text not in attn:
            attn[text] = model.attention(text)
        ids = torch.tensor([[model.stoi[c] for c in text]])
        if hypothesis is not None:
            mask = hypothesis.mask(ids, torch.as_tensor(codes_of)[ids], model.rec["vocab"])[0]
        else:
            mask = target_mask(pattern, ids, torch.as_tensor(codes_of)[ids])
        if mask is None:
            return None
        mask = mask.numpy()
        a = attn[text][layer, head]
        n = len(text)
        back = np.arange(n)[:, None] - np.arange(n)[None, :]
        inside = mask & (back < WINDOW)
        far = inside & (back >= 2) if kind not in ("offset", "argmax") else inside
        for tier, m in ((1, far), (0, inside)):
            mass = (a * m).sum(1)
            mass[:SKIP + WINDOW - 1] = 0  # no window holds the start of the input
            if pattern in COPYING:  # the window of both copies, its stripe in every row of the second
                mass[:n - 1] = 0
            q = int(mass.argmax())
            if mass[q] > 0 and (best is None or (tier, mass[q]) > best[0]):
                best = ((tier, float(mass[q])), desc, text, q, m if kind != "class" else inside)
    if best is None:
        return None
    (_, mass), desc, text, q, marks = best
    s = max(0, q - WINDOW + 1)
    window = np.s_[s:q + 1, s:q + 1]
    if kind == "class":  # a class's keys are everywhere: mark the last query's only
        marks = np.where(np.arange(len(text))[:, None] == q, marks, False)
    targets = "the keys the hypothesis names" if hypothesis is not None else "the role's targets"
    caption = (f"{desc}, characters {s + 1}–{q + 1} of {len(text)} (attention to earlier characters is not shown); "
               f"last row: the query, with {mass:.3f} of its attention on {targets} in the window (dotted)")
    return Panel(caption, text[s:q + 1], attn[text][layer, head][window], marks[window], mass)

