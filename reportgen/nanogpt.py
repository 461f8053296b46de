"""nanoGPT checkpoints (`ckpt.pt` with `model`, `model_args`, `config`; vocabulary in `meta.pkl`).

nanoGPT's GPT is the same pre-LN decoder with different names: one fused `c_attn` (q, k, v blocks
of D rows each, heads contiguous inside each block), `c_proj`, `c_fc`, tied `lm_head`. This module
renames and re-slices its tensors into the course layout, so the rest of reportgen sees a
TransformerLM. `meta.pkl` is read with an unpickler that refuses every class: only plain dicts,
lists, strings and numbers load.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch

from .errors import ReportgenError


class _PlainUnpickler(pickle.Unpickler):
    """Unpickler for plain data only: any class or function reference is refused."""

    def find_class(self, module: str, name: str):  # noqa: D102 - refuse everything
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def find_meta(ckpt: Path, payload: dict, explicit: Path | None = None) -> Path:
    """Where nanoGPT keeps the vocabulary: `explicit` (--meta), beside the checkpoint, or in
    `data/<config dataset>/meta.pkl` relative to the checkpoint's folder or any of its parents."""
    if explicit is not None:
        return explicit
    candidates = [ckpt.parent / "meta.pkl"]
    dataset = (payload.get("config") or {}).get("dataset") if isinstance(payload.get("config"), dict) else None
    if isinstance(dataset, str) and dataset and "/" not in dataset and dataset not in (".", ".."):
        candidates += [folder / "data" / dataset / "meta.pkl" for folder in [ckpt.parent, *ckpt.parent.parents]]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    where = f"beside it or in data/{dataset}/ above it" if dataset else "beside it"
    raise ReportgenError(f"{ckpt}: nanoGPT vocabulary meta.pkl not found {where}; give it with --meta FILE")


def read_meta(path: Path) -> dict[str, Any]:
    """nanoGPT's meta.pkl ({'stoi', 'itos', 'vocab_size'}) without running any code."""
    try:
        data = _PlainUnpickler(io.BytesIO(path.read_bytes())).load()
    except FileNotFoundError:
        raise ReportgenError(f"{path}: meta.pkl not found") from None
    except Exception as exc:  # any failure means the file is not plain data
        raise ReportgenError(f"{path}: not a plain-data meta.pkl ({str(exc)[:120]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("itos"), dict):
        raise ReportgenError(f"{path}: meta.pkl has no 'itos' mapping")
    return data


def is_nanogpt(payload: dict) -> bool:
    """Whether a loaded checkpoint dict looks like nanoGPT's."""
    return isinstance(payload.get("model"), dict) and isinstance(payload.get("model_args"), dict)


def check_args(sd: dict[str, torch.Tensor], L: int, H: int, D: int, ctx: int, vocab: int, path: Path) -> None:
    """model_args against the weights: the number of blocks, the embedding width, the context (position table) and
    the vocabulary must be what the tensors say (a wrong n_layer would silently drop or invent layers). The head
    count cannot be read from nanoGPT's fused projection; it must divide the width."""
    blocks = {int(k.split(".")[2]) for k in sd if k.startswith("transformer.h.") and k.split(".")[2].isdigit()}
    wte, wpe = sd.get("transformer.wte.weight"), sd.get("transformer.wpe.weight")
    checks = [("n_layer", L, len(blocks), "transformer blocks in the weights")]
    if wte is not None and wte.dim() == 2:
        checks += [("vocab_size", vocab, wte.shape[0], "rows of transformer.wte"),
                   ("n_embd", D, wte.shape[1], "columns of transformer.wte")]
    if wpe is not None and wpe.dim() == 2:
        checks.append(("block_size", ctx, wpe.shape[0], "rows of transformer.wpe"))
    for name, said, found, what in checks:
        if said != found:
            raise ReportgenError(f"{path}: nanoGPT model_args {name} = {said} but the checkpoint has {found} {what}")
    if H < 1 or D % H:
        raise ReportgenError(f"{path}: nanoGPT model_args n_head = {H} does not divide n_embd = {D}")


def convert(payload: dict, path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(hyperparameters, course-layout state dict) from a nanoGPT checkpoint."""
    args = payload["model_args"]
    try:
        L, H, D = int(args["n_layer"]), int(args["n_head"]), int(args["n_embd"])
        ctx, vocab = int(args["block_size"]), int(args["vocab_size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ReportgenError(f"{path}: nanoGPT model_args incomplete ({exc})") from None
    sd = {k.removeprefix("_orig_mod."): v for k, v in payload["model"].items() if isinstance(v, torch.Tensor)}
    check_args(sd, L, H, D, ctx, vocab, path)
    hs = D // H

    def get(key: str, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        if key in sd:
            return sd[key]
        if shape is not None:  # bias=False models: zero biases are exactly equivalent
            return torch.zeros(shape)
        raise ReportgenError(f"{path}: nanoGPT state dict lacks {key}")

    out = {"embed.token_embeddings.weight": get("transformer.wte.weight"),
           "embed.position_embeddings.weight": get("transformer.wpe.weight"),
           "layer_norm.weight": get("transformer.ln_f.weight"), "layer_norm.bias": get("transformer.ln_f.bias", (D,)),
           "word_prediction.weight": sd.get("lm_head.weight", get("transformer.wte.weight")),
           "word_prediction.bias": torch.zeros(vocab)}
    for i in range(L):
        p, q = f"transformer.h.{i}.", f"layers.{i}."
        w = get(p + "attn.c_attn.weight")  # (3D, D): rows q | k | v
        b = get(p + "attn.c_attn.bias", (3 * D,))
        wq, wk, wv = w.split(D)
        bq, bk, bv = b.split(D)
        for h in range(H):
            rows = slice(h * hs, (h + 1) * hs)
            out[f"{q}causal_attention.kqv_matrices.{h}.weight"] = torch.cat([wk[rows], wq[rows], wv[rows]])
            out[f"{q}causal_attention.kqv_matrices.{h}.bias"] = torch.cat([bk[rows], bq[rows], bv[rows]])
        out[q + "causal_attention.proj.weight"] = get(p + "attn.c_proj.weight")
        out[q + "causal_attention.proj.bias"] = get(p + "attn.c_proj.bias", (D,))
        for ours, theirs in (("layer_norm_1", "ln_1"), ("layer_norm_2", "ln_2")):
            out[f"{q}{ours}.weight"] = get(f"{p}{theirs}.weight")
            out[f"{q}{ours}.bias"] = get(f"{p}{theirs}.bias", (D,))
        hidden = get(p + "mlp.c_fc.weight").shape[0]
        out[q + "mlp.i2h.weight"] = get(p + "mlp.c_fc.weight")
        out[q + "mlp.i2h.bias"] = get(p + "mlp.c_fc.bias", (hidden,))
        out[q + "mlp.h2o.weight"] = get(p + "mlp.c_proj.weight")
        out[q + "mlp.h2o.bias"] = get(p + "mlp.c_proj.bias", (D,))
    config = dict(n_layers=L, n_heads=H, embed_size=D, max_context_len=ctx, vocab_size=vocab,
                  mlp_hidden_size=hidden if L else 4 * D, with_residuals=True)
    return config, out


def vocabulary(meta: dict[str, Any], vocab_size: int, path: Path) -> list[str]:
    """Symbols by id from meta['itos'], padded with placeholders up to the model's vocab_size."""
    itos = {int(k): str(v) for k, v in meta["itos"].items()}
    if len(itos) > vocab_size:
        raise ReportgenError(f"{path}: meta.pkl has {len(itos)} symbols but the model only {vocab_size}")
    return [itos.get(i, f"<unused{i}>") for i in range(vocab_size)]
