"""What `TransformerLM.run_with_cache` keeps of a forward pass (tensors; `api.run_with_cache` turns them into numpy
arrays with TransformerLens' names)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class ActivationCache:
    """Activations of one forward pass (`TransformerLM.run_with_cache`): per layer the residual stream entering it
    (B, N, D), its attention (B, H, N, N) and per-head outputs before the projection (B, H, N, hs); the final
    residual before the last LayerNorm (B, N, D) and the logits (B, N, V). Also per layer: queries, keys and values
    (B, H, N, hs; the keys' and queries' dot product over sqrt(hs), causally masked, is the attention's softmax
    input), the attention block's output after the projection (B, N, D), the stream after it (B, N, D; what the
    MLP reads, through its LayerNorm) and the MLP's output (B, N, D). Without residual connections each layer's
    output replaces the stream instead of adding to it."""

    resid_pre: list[torch.Tensor]
    attention: list[torch.Tensor]
    head_outputs: list[torch.Tensor]
    final_resid: torch.Tensor
    logits: torch.Tensor
    queries: list[torch.Tensor] = field(default_factory=list)
    keys: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)
    attn_out: list[torch.Tensor] = field(default_factory=list)
    resid_mid: list[torch.Tensor] = field(default_factory=list)
    mlp_out: list[torch.Tensor] = field(default_factory=list)
