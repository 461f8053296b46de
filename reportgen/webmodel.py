"""The explorer's copy of a model: the weights its attention needs, written as a small script the explorer page loads
with a <script> tag (fetch() is refused on file://), plus the default passages it opens with.

Only what the attention of every layer needs is exported: the embeddings; per layer its first LayerNorm and the
per-head `kqv` Linears; and, for every layer but the last, the output projection, the second LayerNorm and the MLP
(they make the next layer's input). The final LayerNorm and the unembedding are left out. Tensors are written as
float16 when that is exact for every exported value (the shipped checkpoints store float16), else as float32, little
endian, one base64 string. The file is a pure function of the checkpoint and the held-out text: same inputs, same
bytes. It is made in the analysis stage (the model is loaded there) and reused when only rendering changes.
"""

from __future__ import annotations

import base64
import json

import numpy as np

from .languages import example_inputs, has_rtl

GLOBAL = "REPORTGEN_MODELS"  # window.REPORTGEN_MODELS[file name] = the model's record


def model_script_file(slug: str) -> str:
    """The explorer's model file of a model slug, beside its page."""
    return f"explore-{slug}.model.js"


def exported_tensors(model) -> list:
    """(state-dict name, float32 CPU tensor) of every weight the attention of every layer needs, in a fixed order."""
    import torch

    sd = model.state_dict()
    names = ["embed.token_embeddings.weight", "embed.position_embeddings.weight"]
    L, H = model.config.n_layers, model.config.n_heads
    for l in range(L):
        p = f"layers.{l}."
        names += [p + "layer_norm_1.weight", p + "layer_norm_1.bias"]
        for h in range(H):
            names += [f"{p}causal_attention.kqv_matrices.{h}.weight", f"{p}causal_attention.kqv_matrices.{h}.bias"]
        if l < L - 1:
            names += [p + "causal_attention.proj.weight", p + "causal_attention.proj.bias",
                      p + "layer_norm_2.weight", p + "layer_norm_2.bias",
                      p + "mlp.i2h.weight", p + "mlp.i2h.bias", p + "mlp.h2o.weight", p + "mlp.h2o.bias"]
    return [(n, sd[n].detach().to("cpu", torch.float32)) for n in names]


def default_passages(tokenizer, language: str | None, heldout: str, context: int, own_text: bool = False) -> list[dict]:
    """The passages the explorer opens with: a held-out window of the full context, a passage repeated to fill it,
    and short inputs (in the model's vocabulary, not all capitals): the language's own, or with `own_text` the first
    words of the held-out text (languages.example_inputs), each with its caption."""
    passages = [{"caption": f"held-out window ({len(heldout[:context])} characters, the full context)",
                 "text": heldout[:context]}]
    half = heldout[context:context + context // 2]
    if len(half) >= 2:
        passages.append({"caption": f"a held-out passage of {len(half)} characters, then the same again",
                         "text": half * 2})
    for text in example_inputs(language, heldout if own_text else None):
        if text and not text.isupper() and len(text) <= context and not tokenizer.unknown_chars(text):
            passages.append({"caption": f"short input ({len(text)} characters): early characters draw extra "
                                        f"attention at the start of any input", "text": text})
    return passages


def model_script(bundle, language: str | None, heldout: str, name: str, own_text: bool = False) -> str:
    """The JavaScript file that registers this model under `name` in window.REPORTGEN_MODELS (ASCII only)."""
    model = bundle.model
    cfg = model.config
    tensors = exported_tensors(model)
    flat = np.concatenate([t.numpy().ravel() for _, t in tensors]) if tensors else np.zeros(0, np.float32)
    half = flat.astype("<f2")
    dtype = "float16" if np.array_equal(half.astype(np.float32), flat) else "float32"
    raw = (half if dtype == "float16" else flat.astype("<f4")).tobytes()
    index, offset = [], 0
    for n, t in tensors:
        index.append([n, list(t.shape), offset])
        offset += t.numel()
    blocks = list(model.layers)
    record = {
        "n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "embed_size": cfg.embed_size,
        "head_size": cfg.head_size, "context": cfg.max_context_len, "mlp_hidden_size": cfg.mlp_hidden_size,
        "with_residuals": [bool(b.with_residuals) for b in blocks],
        "eps": [[float(b.layer_norm_1.eps), float(b.layer_norm_2.eps)] for b in blocks],
        "vocab": list(bundle.tokenizer.vocab), "language": language or "", "rtl": has_rtl(heldout[:cfg.max_context_len]),
        "passages": default_passages(bundle.tokenizer, language, heldout, cfg.max_context_len, own_text),
        "dtype": dtype, "tensors": index, "data": base64.b64encode(raw).decode("ascii"),
    }
    body = json.dumps(record, ensure_ascii=True, sort_keys=True, separators=(",", ":"))
    return (f"// reportgen: the weights the attention explorer runs ({dtype}, {len(raw)} bytes before base64)\n"
            f"window.{GLOBAL} = window.{GLOBAL} || {{}};\n"
            f"window.{GLOBAL}[{json.dumps(name)}] = {body};\n")


def rename_script(text: str, old: str, new: str) -> str | None:
    """A model script registered under file name `old`, registered under `new` instead (a label change renames the
    explorer's files; the weights are the same); None when `text` is not registered under `old`."""
    before, after = f"window.{GLOBAL}[{json.dumps(old)}] = ", f"window.{GLOBAL}[{json.dumps(new)}] = "
    return text.replace(before, after, 1) if text.count(before) == 1 else None
