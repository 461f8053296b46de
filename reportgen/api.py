"""The Python API for notebooks: load a model as the run does, read its activations, ablate or patch any heads,
attribute logits to heads, test a hypothesis with the run's statistics, and explore attention inline.

    from reportgen import api
    model = api.load("inputs/models/en/step05000.pt")       # reportgen, course or nanoGPT checkpoint
    attn = api.attention(model, "In the beginning God created")   # (layers, heads, N, N) numpy array
    cache = api.run_with_cache(model, "In the beginning God created")
    cache["q", 1]                                              # layer 1's queries (heads, N, head size)
    with api.ablate(model, ["L0H2"], "zero"):                  # or mean (reference=...), uniform, resample
        worse = api.loss(model, "In the beginning God created")
    with api.patch(model, ["L1H0"], "In the beginning God planted"):  # outputs from another input, same length
        patched = api.logits(model, "In the beginning God created")
    dla = api.logit_attribution(model, "In the beginning God created")  # (layers, heads, N - 1)
    result = api.test(api.Hypothesis("prev", "", key_offset=1), model, Path("my.txt"))  # nulls, CI, q, replication
    api.explore(model, "In the beginning God created")         # displays in Jupyter (_repr_html_)

Rows of an attention matrix are queries, columns keys: attn[l, h, i, j] is how much character i
attends to character j <= i. A list of texts of one length is read as a batch (results gain a leading
batch axis). Heads are (layer, head) pairs or names such as "L1H0". Nothing here writes files except
`export` and `Explorer.save`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from . import loader, notebook
from .checkpoint import ModelBundle
from .classes import CLASS_NAMES, CharClasses
from .detectors import SKIP, batch_stats
from .device import resolve
from .errors import ReportgenError
from .hypotheses import Hypothesis
from .hyptest import HypothesisTest, test



def _takes_model(func):
    """Check that the first argument is a model from `load` (one ReportgenError, never an AttributeError)."""
    @functools.wraps(func)
    def checked(model, *args, **kwargs):
        if not isinstance(model, ModelBundle):
            raise ReportgenError(f"{func.__name__}: model must be a model from reportgen.api.load, not "
                                 f"{type(model).__name__}")
        return func(model, *args, **kwargs)
    return checked

def load(path: str | Path, *, text: str | Path | None = None, heldout: str | Path | None = None,
         with_residuals: bool | None = None, train_text: str | Path | None = None, meta: str | Path | None = None,
         language: str | None = None, device: str = "auto", oov: str = "error") -> ModelBundle:
    """Load a checkpoint of any supported kind (file or run folder) into a `ModelBundle`, as `reportgen run` does
    (`loader.load`): a course checkpoint that does not record whether it was trained with residual connections is
    evaluated both ways on `text` (a string, or a `Path` whose held-out part the run would use; default the
    language's corpus) and the better fit is kept; `with_residuals` says it instead. Forward passes run on
    `device` (auto: cuda when torch sees a GPU, else cpu) and every result comes back as CPU numpy."""
    return loader.load(path, text=text, heldout=heldout, with_residuals=with_residuals, train_text=train_text,
                       language=language, meta=meta, device=resolve(device), oov=oov)


def _ids(model: ModelBundle, text: str) -> torch.Tensor:
    unknown = model.tokenizer.unknown_chars(text)
    if unknown:
        raise ReportgenError(f"text has characters outside the model's vocabulary: {''.join(unknown)!r}")
    if not text or len(text) > model.config.max_context_len:
        raise ReportgenError(f"text must have 1 to {model.config.max_context_len} characters (the model's context), "
                             f"not {len(text)}")
    return torch.tensor([model.tokenizer.tokenize(text)])


@torch.no_grad()
@_takes_model
def attention(model: ModelBundle, text: str) -> np.ndarray:
    """Attention of every layer and head on `text`: (layers, heads, N, N), rows = queries."""
    _, attn = model.model(_ids(model, text), return_attention_weights=True)  # (L, 1, H, N, N)
    return attn[:, 0].numpy()


@torch.no_grad()
@_takes_model
def direct_logits(model: ModelBundle, text: str, layer: int, head: int) -> np.ndarray:
    """What head (layer, head) writes at each position of `text`, read through the final LayerNorm's scale and the
    unembedding: (N, vocab) logits centred over the vocabulary (direct logit attribution; models with residual
    connections only). `np.argsort(-out[i])` ranks the characters the head raises at position i."""
    m = model.model
    if not m.config.with_residuals:
        raise ReportgenError("direct logit attribution needs residual connections; this model has none")
    if not (0 <= layer < m.config.n_layers and 0 <= head < m.config.n_heads):
        raise ReportgenError(f"no head L{layer}H{head} in a {m.config.n_layers}x{m.config.n_heads} model")
    cache = m.run_with_cache(_ids(model, text))
    return m.direct_logits(cache, layer)[0, head].cpu().numpy()


# ---- activations ----------------------------------------------------------------------------------------------

HEAD_NAME = re.compile(r"^L(\d+)H(\d+)$")
CACHE_NAMES = ("resid_pre", "q", "k", "v", "pattern", "z", "result", "attn_out", "resid_mid", "mlp_out", "resid_post")


def _batch(model: ModelBundle, text: str | Sequence[str]) -> tuple[torch.Tensor, bool]:
    """Token ids (B, N) of one text or a list of texts of one length, and whether a list was given; inputs that an
    ablation or patch in force cannot run on are one-line errors here, before the forward pass."""
    if isinstance(text, str):
        ids, batched = _ids(model, text), False
    elif isinstance(text, (list, tuple)) and text and all(isinstance(t, str) for t in text):
        if len({len(t) for t in text}) != 1:
            raise ReportgenError(f"a batch of texts must have one length, not {sorted({len(t) for t in text})}")
        ids, batched = torch.cat([_ids(model, t) for t in text]), True
    else:
        raise ReportgenError(f"text must be a string or a non-empty list of strings, not {type(text).__name__}")
    for block in model.model.layers:
        for mode, value in block.causal_attention._ablation.values():
            if mode == "resample" and ids.shape[0] < 2:
                raise ReportgenError("resample ablation gives each text the head's output on another text of the "
                                     "batch: pass a list of two or more texts of the same length")
            if mode == "patch" and (value.shape[1] != ids.shape[1] or value.shape[0] not in (1, ids.shape[0])):
                raise ReportgenError(f"heads are patched from {value.shape[0]} input(s) of {value.shape[1]} "
                                     f"characters; this input is {ids.shape[0]} of {ids.shape[1]}: patching needs "
                                     f"inputs of the same length")
    return ids, batched


@dataclass(frozen=True)
class Cache:
    """Activations of one forward pass (`run_with_cache`), CPU numpy. `cache[name, layer]` gives one layer's, and
    `cache[name]` every layer's stacked on a leading axis. Names (TransformerLens' hook names) and shapes for one
    text (a batch adds a leading B):

    resid_pre (N, D): the residual stream entering the layer; q, k, v (H, N, hs): queries, keys, values; pattern
    (H, N, N): attention, rows = queries; z (H, N, hs): each head's output before the output projection; result
    (H, N, D): what each head adds to the stream (its slice of the projection; the projection's bias belongs to no
    head); attn_out (N, D): the attention block's output; resid_mid (N, D): the stream after it; mlp_out (N, D);
    resid_post (N, D): the stream leaving the layer. Also `logits` (N, V), `final_resid` (N, D, before the last
    LayerNorm) and `text`. Any ablation or patch in force when it was taken applies."""

    text: str | list[str]
    activations: dict[str, list[np.ndarray]]
    logits: np.ndarray
    final_resid: np.ndarray

    def __getitem__(self, key) -> np.ndarray:
        name, layer = key if isinstance(key, tuple) else (key, None)
        if name not in self.activations:
            raise KeyError(f"no activation {name!r}; names: {', '.join(CACHE_NAMES)}")
        per_layer = self.activations[name]
        return np.stack(per_layer) if layer is None else per_layer[layer]

    @property
    def names(self) -> tuple[str, ...]:
        """The activation names, in the order a forward pass computes them."""
        return CACHE_NAMES


@torch.no_grad()
@_takes_model
def run_with_cache(model: ModelBundle, text: str | Sequence[str]) -> Cache:
    """One forward pass of `text` keeping every activation (`Cache`), under any ablation or patch in force."""
    ids, batched = _batch(model, text)
    m = model.model
    c = m.run_with_cache(ids)
    pick = (lambda t: t.cpu().numpy()) if batched else (lambda t: t[0].cpu().numpy())
    res = m.config.with_residuals
    per_layer = {
        "resid_pre": c.resid_pre, "q": c.queries, "k": c.keys, "v": c.values, "pattern": c.attention,
        "z": c.head_outputs,
        "result": [blk.causal_attention.head_writes(z) for blk, z in zip(m.layers, c.head_outputs)],
        "attn_out": c.attn_out, "resid_mid": c.resid_mid, "mlp_out": c.mlp_out,
        "resid_post": [mid + mlp if res else mlp for mid, mlp in zip(c.resid_mid, c.mlp_out)],
    }
    return Cache(text, {k: [pick(t) for t in v] for k, v in per_layer.items()}, pick(c.logits), pick(c.final_resid))


@torch.no_grad()
@_takes_model
def logits(model: ModelBundle, text: str | Sequence[str]) -> np.ndarray:
    """Logits (N, vocab) of `text` (under any ablation or patch in force)."""
    ids, batched = _batch(model, text)
    out = model.model(ids).cpu().numpy()
    return out if batched else out[0]


@torch.no_grad()
@_takes_model
def loss(model: ModelBundle, text: str | Sequence[str]) -> float:
    """Mean loss in bits per character of predicting characters 2..N of `text` from the ones before them, in one
    forward pass of all N (so a patch from an input of length N applies), under any ablation or patch in force."""
    ids, _ = _batch(model, text)
    if ids.shape[1] < 2:
        raise ReportgenError("the loss needs a text of at least 2 characters")
    out = model.model(ids)[:, :-1]  # (B, N-1, V)
    nats = torch.nn.functional.cross_entropy(out.transpose(1, 2), ids[:, 1:].to(out.device))
    return float(nats) / math.log(2)


# ---- ablation and patching ------------------------------------------------------------------------------------

def _head_list(model: ModelBundle, heads) -> list[tuple[int, int]]:
    """(layer, head) pairs from pairs or names such as "L1H0"; unknown heads are one-line errors."""
    if isinstance(heads, (str, tuple)) and not (isinstance(heads, tuple) and heads and isinstance(heads[0], tuple)):
        heads = [heads]
    out = []
    L, H = model.config.n_layers, model.config.n_heads
    for h in heads:
        match = HEAD_NAME.match(h) if isinstance(h, str) else None
        pair = (int(match[1]), int(match[2])) if match else tuple(h) if isinstance(h, (tuple, list)) else None
        if pair is None or len(pair) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in pair):
            raise ReportgenError(f"a head is a (layer, head) pair or a name such as 'L1H0', not {h!r}")
        if not (0 <= pair[0] < L and 0 <= pair[1] < H):
            raise ReportgenError(f"no head L{pair[0]}H{pair[1]} in a {L}x{H} model")
        out.append(pair)
    return out


def _windows(model: ModelBundle, reference: str | Path) -> torch.Tensor:
    """Windows (W, context + 1) of a reference text (a string, or a text file read as the run reads --text), or
    the whole text as one window when it is shorter than that."""
    from .capture import encode
    from .corpora import read_text

    text, source = (read_text(reference), str(reference)) if isinstance(reference, Path) else (reference, "reference")
    if not isinstance(text, str) or len(text) < 2:
        raise ReportgenError("mean ablation needs a reference text (a string or a Path) of at least 2 characters")
    ids = encode(model, text, source)
    T = model.config.max_context_len + 1
    n = len(ids) // T
    return torch.as_tensor(ids[: n * T].reshape(n, T) if n else ids[None, :])


@contextlib.contextmanager
@_takes_model
def ablate(model: ModelBundle, heads, mode: str = "zero", *, reference: str | Path | None = None,
           shift: int = 1) -> Iterator[ModelBundle]:
    """Within the block, every function here runs with `heads` ablated (the weights are never changed; the state
    is restored on exit). `heads` is a list of heads, or a dict {head: mode} mixing modes. Modes, as in the run's
    causal stage (`TransformerLM.ablate`): zero (the head's output is 0), mean (its mean output over the windows of
    `reference`, a string or a text file), uniform (uniform causal attention), resample (each text of a batch takes
    the head's output on the text `shift` before it: pass a list of texts of one length)."""
    from .ablation import head_means
    from .model import ABLATION_MODES

    modes = {pair: m for h, m in heads.items() for pair in _head_list(model, [h])} if isinstance(heads, dict) \
        else {pair: mode for pair in _head_list(model, heads)}
    bad = sorted({m for m in modes.values() if m not in ABLATION_MODES}, key=str)
    if bad:
        raise ReportgenError(f"unknown ablation mode {bad[0]!r}; choose one of {', '.join(ABLATION_MODES)}")
    means = None
    if "mean" in modes.values():
        if reference is None:
            raise ReportgenError("mean ablation replaces a head's output by its mean over a reference text: pass "
                                 "reference=TEXT (a string or a Path)")
        means = head_means(model.model, _windows(model, reference))
    with model.model.ablate(modes, means=means, shift=shift):
        yield model


@contextlib.contextmanager
@_takes_model
def patch(model: ModelBundle, heads, source: str | Sequence[str]) -> Iterator[ModelBundle]:
    """Within the block, each of `heads` outputs what it output on `source` (activation patching): its output
    before the projection, position by position, recorded in one forward pass of `source` (under any ablation
    already in force). Inputs read inside must have the length of `source` (one text, or as many texts as a
    batch `source`). The state is restored on exit."""
    pairs = _head_list(model, heads)
    ids, _ = _batch(model, source)
    with torch.no_grad():
        cache = model.model.run_with_cache(ids)
    with model.model.patch({(l, h): cache.head_outputs[l][:, h] for l, h in pairs}):
        yield model


# ---- direct logit attribution ---------------------------------------------------------------------------------

@torch.no_grad()
@_takes_model
def logit_attribution(model: ModelBundle, text: str | Sequence[str]) -> np.ndarray:
    """Direct logit attribution of every head to the character that comes next: (layers, heads, N - 1), entry
    [l, h, i] the logit of character i + 1 that head LlHh writes at position i (`direct_logits`, centred over the
    vocabulary, through the final LayerNorm's scale). Positive: the head pushes the prediction towards the right
    character. Models with residual connections only (without them no head writes to the final stream directly)."""
    m = model.model
    if not m.config.with_residuals:
        raise ReportgenError("direct logit attribution needs residual connections; this model has none")
    ids, batched = _batch(model, text)
    if ids.shape[1] < 2:
        raise ReportgenError("logit attribution needs a text of at least 2 characters (a next character)")
    cache = m.run_with_cache(ids)
    nxt = ids[:, 1:].to(cache.logits.device)  # (B, N-1)
    out = []
    for layer in range(m.config.n_layers):
        dla = m.direct_logits(cache, layer)[:, :, :-1]  # (B, H, N-1, V)
        out.append(dla.gather(-1, nxt[:, None, :, None].expand(-1, dla.shape[1], -1, 1))[..., 0])  # (B, H, N-1)
    stacked = torch.stack(out, 1).cpu().numpy()  # (B, L, H, N-1)
    return stacked if batched else stacked[0]


# ---- the explorer ---------------------------------------------------------------------------------------------

@torch.no_grad()
@_takes_model
def explore(model: ModelBundle, text: str) -> "notebook.Explorer":
    """An attention explorer for `text` that displays in Jupyter (`_repr_html_`): pick a head, point at a character
    to see what it reads; per head its strongest offset and, with residual connections, its mean direct logit
    attribution. Self-contained HTML (inline script and styles, no network); `.save(path)` writes it to a file."""
    attn = attention(model, text)
    dla = logit_attribution(model, text) if model.config.with_residuals and len(text) > 1 else None
    return notebook.Explorer(text, attn, dla, model.path.name)


@_takes_model
def classes(model: ModelBundle, language: str | None = None) -> CharClasses:
    """The character classes reportgen uses for this model's vocabulary."""
    return CharClasses.for_vocab(model.tokenizer.vocab, language or model.language or "en")


@torch.no_grad()
@_takes_model
def scores(model: ModelBundle, text: str, language: str | None = None) -> dict[str, np.ndarray]:
    """Every detector's value on `text` per layer and head: name -> (layers, heads). Queries before the
    ninth character are skipped, as in the report, so `text` needs more than 8 characters."""
    ids = _ids(model, text)
    if ids.shape[1] <= SKIP:
        raise ReportgenError(f"text must have more than {SKIP} characters for detector scores, not {ids.shape[1]}")
    _, attn = model.model(ids, return_attention_weights=True)  # (L, 1, H, N, N)
    codes = torch.as_tensor(classes(model, language).lookup())[ids]
    stats = batch_stats(attn.permute(1, 0, 2, 3, 4), ids, codes, model.tokenizer.vocab_size())
    return {name: v[0].numpy() for name, v in stats.observed.items()}


@_takes_model
def export(model: ModelBundle, passages: list[str], path: str | Path, language: str | None = None) -> Path:
    """Write attention (L, H, N, N) for each passage, with its text, character ids and classes, to one .npz."""
    if isinstance(passages, str) or not all(isinstance(t, str) for t in passages):
        raise ReportgenError("export: passages must be a list of strings (one passage each), not "
                             f"{type(passages).__name__}; wrap a single passage as [text]")
    path = Path(path)
    cls = classes(model, language)
    arrays: dict[str, np.ndarray] = {"class_names": np.array(CLASS_NAMES)}
    for k, text in enumerate(passages):
        arrays[f"attention_{k}"] = attention(model, text)
        arrays[f"text_{k}"] = np.array(text)
        ids = model.tokenizer.tokenize(text)
        arrays[f"ids_{k}"] = np.array(ids)
        arrays[f"classes_{k}"] = cls.lookup()[ids]
    _replace(path, lambda fh: np.savez_compressed(fh, **arrays))
    return path


def _replace(path: Path, write) -> None:
    """Write a new file beside `path` (created exclusively, so never through a link) and rename it onto `path`:
    an existing file or symbolic link there is replaced itself, never the file a link points to."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
