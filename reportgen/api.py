"""A small Python API for notebooks: load a model, get attention for a string, score detectors on it,
export attention matrices.

    from reportgen import api
    model = api.load("inputs/models/en/step05000.pt")       # reportgen, course or nanoGPT checkpoint
    attn = api.attention(model, "In the beginning God created")   # (layers, heads, N, N) numpy array
    scores = api.scores(model, "In the beginning God created the heaven and the earth.")
    scores["offset_1"][0, 2]                                   # layer 0, head 2: mass on the previous character
    dla = api.direct_logits(model, "In the beginning", 1, 0)   # (N, vocab): what L1H0 writes, per position

Rows of an attention matrix are queries, columns keys: attn[l, h, i, j] is how much character i
attends to character j <= i. Nothing here writes files except `export`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from . import loader
from .checkpoint import ModelBundle
from .classes import CLASS_NAMES, CharClasses
from .detectors import SKIP, batch_stats
from .device import resolve
from .errors import ReportgenError


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
def attention(model: ModelBundle, text: str) -> np.ndarray:
    """Attention of every layer and head on `text`: (layers, heads, N, N), rows = queries."""
    _, attn = model.model(_ids(model, text), return_attention_weights=True)  # (L, 1, H, N, N)
    return attn[:, 0].numpy()


@torch.no_grad()
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


def classes(model: ModelBundle, language: str | None = None) -> CharClasses:
    """The character classes reportgen uses for this model's vocabulary."""
    return CharClasses.for_vocab(model.tokenizer.vocab, language or model.language or "en")


@torch.no_grad()
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
