"""The character-level transformer LM, shaped like the course skeleton.

Module tree and state-dict keys match the course's `TransformerLM` so a student's checkpoint
loads with ``strict=True``. Leaves first: attention, MLP, block, config, model.

Dimension letters: B batch, N (or T) sequence length, D embed size, H heads, hs = D / H.
The default forward fuses every head into one matmul and ``scaled_dot_product_attention``;
``return_attention_weights=True`` takes the explicit-softmax path and also returns the attention probabilities.
Head ablation is a context manager (`TransformerLM.ablate`) that never touches the weights and restores the model.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass
from typing import Iterator, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from .activations import ActivationCache

ABLATION_MODES = ("zero", "mean", "uniform", "resample")


@dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of a TransformerLM (the course constructor's arguments)."""

    n_layers: int
    n_heads: int
    embed_size: int
    max_context_len: int
    vocab_size: int
    mlp_hidden_size: int
    with_residuals: bool = True
    dropout: float = 0.0
    init_method: str = "xavier"

    def __post_init__(self) -> None:
        if self.embed_size % self.n_heads != 0:
            raise ValueError(f"embed_size {self.embed_size} is not divisible by n_heads {self.n_heads}")

    @property
    def head_size(self) -> int:
        """Width of one head's keys, queries and values."""
        return self.embed_size // self.n_heads

    def to_dict(self) -> dict:
        """Plain-dict form, for checkpoints and results.json."""
        return asdict(self)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with one `kqv` Linear per head (course layout)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.head_size = config.head_size
        # Each Linear maps D -> 3*hs; its output chunks are k, q, v in that order.
        self.kqv_matrices = nn.ModuleList(
            nn.Linear(config.embed_size, 3 * config.head_size) for _ in range(config.n_heads)
        )
        self.proj = nn.Linear(config.embed_size, config.embed_size)
        self.dropout = nn.Dropout(config.dropout)
        mask = torch.tril(torch.ones(config.max_context_len, config.max_context_len))
        self.register_buffer("mask", mask.unsqueeze(0))  # (1, ctx, ctx)
        # Set only inside TransformerLM.ablate() / patch(): {head: (mode, mean (hs,) | shift | outputs (B|1, N, hs))}
        self._ablation: dict[int, tuple[str, torch.Tensor | int | None]] = {}
        self._record: dict[str, torch.Tensor] | None = None  # set only inside TransformerLM.run_with_cache()

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Project x (B, N, D) to q, k, v, each (B, H, N, hs), with one fused matmul."""
        B, N, _ = x.shape
        weight = torch.cat([m.weight for m in self.kqv_matrices], dim=0)  # (H*3*hs, D)
        bias = torch.cat([m.bias for m in self.kqv_matrices], dim=0)  # (H*3*hs,)
        kqv = F.linear(x, weight, bias).view(B, N, self.n_heads, 3, self.head_size)  # (B, N, H, 3, hs)
        kqv = kqv.permute(3, 0, 2, 1, 4)  # (3, B, H, N, hs)
        k, q, v = kqv[0], kqv[1], kqv[2]
        return q, k, v

    def forward(
        self, x: torch.Tensor, need_weights: bool = False, out: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend over x (B, N, D); return the output (B, N, D) and, if asked, weights (B, H, N, N), written
        into `out` (contiguous, (B, H, N, N)) when given. When every head's output is given (zero, mean or patch:
        an ablation pass resumed from stored outputs) nothing is attended: the same output, bit for bit."""
        B, N, D = x.shape
        fixed = [m for m, _ in self._ablation.values() if m in ("zero", "mean", "patch")]
        if len(fixed) == self.n_heads and not need_weights and self._record is None:  # every head's output is set below
            y, att = x.new_empty(B, self.n_heads, N, self.head_size), None
        else:
            q, k, v = self._qkv(x)  # each (B, H, N, hs)
            if self._record is not None:
                self._record.update(queries=q, keys=k, values=v)
            if need_weights or any(mode == "uniform" for mode, _ in self._ablation.values()):
                att = self._weights(q, k, out)  # (B, H, N, N)
                y = self.dropout(att) @ v  # (B, H, N, hs)
            else:
                att = None
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                   dropout_p=self.dropout.p if self.training else 0.0)  # (B, H, N, hs)
        for h, (mode, value) in self._ablation.items():
            if mode == "zero":
                y[:, h] = 0.0
            elif mode == "mean":
                y[:, h] = value.to(y.dtype)
            elif mode == "resample":  # the head's output at the same positions of window b - shift of the batch
                if B < 2:
                    raise ValueError("resample ablation needs a batch of at least two windows (donors)")
                y[:, h] = y[:, h].roll(int(value) % B or 1, dims=0)
            elif mode == "patch":  # outputs recorded on another input of the same length
                if value.shape[-2] != N or value.shape[0] not in (1, B):
                    raise ValueError(f"head {h}'s patch is {value.shape[0]} x {value.shape[-2]}, the batch {B} x {N}")
                y[:, h] = value.to(y.device, y.dtype)
        if self._record is not None:
            self._record["head_outputs"] = y  # (B, H, N, hs): per-head outputs after any ablation, before proj
        y = y.transpose(1, 2).reshape(B, N, D)  # (B, N, H*hs)
        return self.proj(y), att

    def _weights(self, q: torch.Tensor, k: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Attention weights (B, H, N, N) from q, k (B, H, N, hs), uniform-ablated heads included (into `out`)."""
        N = q.shape[-2]
        # k is a strided slice of the fused projection; a contiguous copy (1/4 of the scores' size at hs = 32)
        # makes the batched product ~1.5x faster, with the same scores (the shipped models' attention is unchanged)
        scores = (q * (1.0 / math.sqrt(self.head_size))) @ k.contiguous().transpose(-2, -1)  # (B, H, N, N)
        causal = self.mask[:, :N, :N] == 0  # (1, N, N)
        # Masked by adding 0 / -inf in place (scores is a fresh tensor): the same weights bit for bit as
        # masked_fill, at ~2/3 of its cost (a broadcast add streams; a masked fill reads the mask per element).
        scores += torch.zeros_like(causal, dtype=scores.dtype).masked_fill_(causal, float("-inf"))
        att = torch.softmax(scores, dim=-1) if out is None else torch.softmax(scores, dim=-1, out=out)
        uniform = [h for h, (mode, _) in self._ablation.items() if mode == "uniform"]
        if uniform:
            flat = (~causal).to(att.dtype) / (~causal).sum(-1, keepdim=True)  # (1, N, N)
            if out is None:
                att = att.clone()  # the softmax's own output may be needed by autograd
            att[:, uniform] = flat
        return att

    def weights(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Only the attention weights (B, H, N, N) of x (B, N, D): `forward(x, True)`'s, nothing after them."""
        q, k, _ = self._qkv(x)
        return self._weights(q, k, out)

    def head_writes(self, y: torch.Tensor) -> torch.Tensor:
        """What each head adds to the residual stream (B, H, N, D) from its outputs y (B, H, N, hs), bias left out."""
        w = self.proj.weight.view(self.proj.out_features, self.n_heads, self.head_size)  # (D, H, hs)
        return torch.einsum("bhns,dhs->bhnd", y, w)

    def head_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Per-head outputs before the projection, (B, H, N, hs), for mean-ablation statistics."""
        q, k, v = self._qkv(x)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


class MLP(nn.Module):
    """Position-wise feed-forward layer: i2h, GELU, h2o."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.i2h = nn.Linear(config.embed_size, config.mlp_hidden_size)
        self.h2o = nn.Linear(config.mlp_hidden_size, config.embed_size)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (B, N, D) to (B, N, D)."""
        return self.dropout(self.h2o(F.gelu(self.i2h(x))))


class TransformerDecoderBlock(nn.Module):
    """Pre-LayerNorm decoder block, with or without residual connections."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.with_residuals = config.with_residuals
        self.layer_norm_1 = nn.LayerNorm(config.embed_size)
        self.causal_attention = CausalSelfAttention(config)
        self.layer_norm_2 = nn.LayerNorm(config.embed_size)
        self.mlp = MLP(config)
        self._record: dict[str, torch.Tensor] | None = None  # set only inside TransformerLM.run_with_cache()

    def forward(
        self, x: torch.Tensor, need_weights: bool = False, out: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Map (B, N, D) to (B, N, D); also return the attention weights if asked (into `out` if given)."""
        a, att = self.causal_attention(self.layer_norm_1(x), need_weights, out)
        x = x + a if self.with_residuals else a
        m = self.mlp(self.layer_norm_2(x))
        if self._record is not None:
            self._record.update(attn_out=a, resid_mid=x, mlp_out=m)
        x = x + m if self.with_residuals else m
        return x, att


class Embed(nn.Module):
    """Token plus learned absolute position embeddings."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.token_embeddings = nn.Embedding(config.vocab_size, config.embed_size)
        self.position_embeddings = nn.Embedding(config.max_context_len, config.embed_size)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Map token ids (B, N) to embeddings (B, N, D)."""
        N = idx.shape[1]
        pos = torch.arange(N, device=idx.device)  # (N,)
        return self.dropout(self.token_embeddings(idx) + self.position_embeddings(pos))


class TransformerLM(nn.Module):
    """Character-level GPT-style language model with the course's module tree."""

    def __init__(
        self,
        n_layers: int,
        n_heads: int,
        embed_size: int,
        max_context_len: int,
        vocab_size: int,
        mlp_hidden_size: int,
        with_residuals: bool,
        dropout: float = 0.0,
        init_method: str = "xavier",
    ):
        super().__init__()
        self.config = ModelConfig(
            n_layers, n_heads, embed_size, max_context_len, vocab_size, mlp_hidden_size,
            with_residuals, dropout, init_method,
        )
        self.embed = Embed(self.config)
        self.layers = nn.ModuleList(TransformerDecoderBlock(self.config) for _ in range(n_layers))
        self.layer_norm = nn.LayerNorm(embed_size)
        self.word_prediction = nn.Linear(embed_size, vocab_size)
        self._init_weights(init_method)

    @classmethod
    def from_config(cls, config: ModelConfig) -> "TransformerLM":
        """Build a model from a `ModelConfig`."""
        return cls(**config.to_dict())

    def _init_weights(self, method: str) -> None:
        """Initialise Linear/Embedding weights ('xavier', 'normal' or 'kaiming'); biases to 0."""
        init = {
            "xavier": nn.init.xavier_uniform_,
            "normal": lambda w: nn.init.normal_(w, std=0.02),
            "kaiming": lambda w: nn.init.kaiming_uniform_(w, nonlinearity="linear"),
        }
        if method not in init:
            raise ValueError(f"unknown init_method {method!r}; choose one of {sorted(init)}")
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                init[method](module.weight)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor, return_attention_weights: bool = False, out: torch.Tensor | None = None):
        """Logits (B, N, vocab); with `return_attention_weights`, also attention (L, B, H, N, N) (into `out`)."""
        B, N = idx.shape
        if N > self.config.max_context_len:
            raise ValueError(f"sequence length {N} exceeds max_context_len {self.config.max_context_len}")
        x = self.embed(idx)  # (B, N, D)
        # Without autograd each layer writes its weights into one (L, B, H, N, N) buffer (`out`, or a new one: no
        # stacking copy); with autograd (out= has no gradient) they are stacked.
        wanted = return_attention_weights and not torch.is_grad_enabled()
        buffer = (self._weight_buffer(B, N, x) if out is None else out) if wanted else None
        weights = []
        for layer, block in enumerate(self.layers):
            x, att = block(x, return_attention_weights, None if buffer is None else buffer[layer])
            weights.append(att)
        logits = self.word_prediction(self.layer_norm(x))  # (B, N, vocab)
        if return_attention_weights:
            return logits, buffer if buffer is not None else torch.stack(weights)  # (L, B, H, N, N)
        return logits

    def _weight_buffer(self, B: int, N: int, x: torch.Tensor) -> torch.Tensor:
        """Empty (L, B, H, N, N): each layer writes its softmax into its own slice (no copy stacking the layers)."""
        return torch.empty(self.config.n_layers, B, self.config.n_heads, N, N, dtype=x.dtype, device=x.device)

    @torch.no_grad()
    def layer_inputs(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """The residual stream entering each layer, n_layers tensors (B, N, D) on the weights' device: a forward
        pass resumed from one of them with `logits_from` gives the full pass's logits bit for bit."""
        x = self.embed(idx.to(self.word_prediction.weight.device))  # (B, N, D)
        inputs = []
        for layer in self.layers:
            inputs.append(x)
            x, _ = layer(x)
        return inputs

    @torch.no_grad()
    def logits_from(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, N, vocab) of a forward pass resumed at `layer` from its input x (see `layer_inputs`); an
        ablation below `layer` is not seen, one at or above it is."""
        for block in self.layers[layer:]:
            x, _ = block(x)
        return self.word_prediction(self.layer_norm(x))

    @torch.no_grad()
    def attention(self, idx: torch.Tensor, out: torch.Tensor | None = None,
                  start: tuple[int, torch.Tensor] | None = None) -> torch.Tensor:
        """Attention of every layer (B, L, H, N, N), without logits: a view of a layer-major (L, B, H, N, N) tensor,
        `out` if given (one buffer for many batches saves page faults), on idx's device. `start` (layer, its input
        (B, N, D), as `layer_inputs` gives it): the pass resumes there, and `out`'s layers below it are kept."""
        B, N = idx.shape
        if N > self.config.max_context_len:
            raise ValueError(f"sequence length {N} exceeds max_context_len {self.config.max_context_len}")
        first, x = start or (0, self.embed(idx.to(self.word_prediction.weight.device)))  # x: (B, N, D)
        weights = self._weight_buffer(B, N, x) if out is None else out
        for layer in range(first, self.config.n_layers - 1):
            x, _ = self.layers[layer](x, True, weights[layer])
        last = self.layers[-1]  # its weights need neither its output nor its MLP: skip both
        last.causal_attention.weights(last.layer_norm_1(x), weights[-1])
        return weights.transpose(0, 1).to(idx.device)  # (B, L, H, N, N)

    @torch.no_grad()
    def run_with_cache(self, idx: torch.Tensor) -> "ActivationCache":
        """One forward pass that keeps what interpretability needs: the residual stream entering each layer, each
        layer's attention and per-head outputs, the final residual and the logits (any ablation in force applies)."""
        x = self.embed(idx.to(self.word_prediction.weight.device))  # (B, N, D)
        records = []
        for block in self.layers:
            record: dict[str, torch.Tensor] = {"resid_pre": x}  # the layers add queries, ..., mlp_out
            block._record = block.causal_attention._record = record
            try:
                x, record["attention"] = block(x, True)
            finally:
                block._record = block.causal_attention._record = None
            records.append(record)
        logits = self.word_prediction(self.layer_norm(x))
        return ActivationCache(final_resid=x, logits=logits, **{k: [r[k] for r in records] for k in records[0]})

    def direct_logits(self, cache: "ActivationCache", layer: int) -> torch.Tensor:
        """Direct logit attribution of every head of `layer`, (B, H, N, V): its write to the residual stream through
        the final LayerNorm's scale (frozen at the clean pass's statistics, as TransformerLens does) and the
        unembedding, centred over the vocabulary (only differences between logits matter)."""
        ln = self.layer_norm
        final = cache.final_resid  # (B, N, D)
        scale = (final.var(-1, unbiased=False, keepdim=True) + ln.eps).rsqrt()  # (B, N, 1)
        writes = self.layers[layer].causal_attention.head_writes(cache.head_outputs[layer])  # (B, H, N, D)
        writes = writes - writes.mean(-1, keepdim=True)  # LayerNorm removes the mean of each vector
        logits = (writes * scale.unsqueeze(1) * ln.weight) @ self.word_prediction.weight.T  # (B, H, N, V)
        return logits - logits.mean(-1, keepdim=True)

    @contextlib.contextmanager
    def ablate(
        self,
        heads: Mapping[tuple[int, int], str],
        means: Mapping[tuple[int, int], torch.Tensor] | None = None,
        shift: int = 1,
    ) -> Iterator["TransformerLM"]:
        """Within the block, replace heads {(layer, head): mode} by zero, mean, uniform attention or a resample.

        'mean' needs `means[(layer, head)]`, the head's mean output (hs,). 'resample' replaces the head's output at
        every position by its output at the same position of another window of the same batch (window b takes
        window b - `shift`'s, cyclically; batches need >= 2 windows): the head keeps its typical output but loses
        the information about this window. Weights are never modified and the ablation state is cleared on
        exit, even after an exception (to what an enclosing `ablate` or `patch` set).
        """
        for (layer, head), mode in heads.items():
            if mode not in ABLATION_MODES:
                raise ValueError(f"unknown ablation mode {mode!r}; choose one of {ABLATION_MODES}")
            if mode == "mean" and (means is None or (layer, head) not in means):
                raise ValueError(f"mean ablation of L{layer}H{head} needs its mean output")
        with self._replacing({key: (mode, means[key] if mode == "mean" else shift if mode == "resample" else None)
                              for key, mode in heads.items()}):
            yield self

    @contextlib.contextmanager
    def patch(self, outputs: Mapping[tuple[int, int], torch.Tensor]) -> Iterator["TransformerLM"]:
        """Within the block, heads {(layer, head): outputs (B or 1, N, hs)} output those, e.g. their `run_with_cache`
        head outputs on another input of the same length (activation patching); state restored as in `ablate`."""
        for (layer, head), value in outputs.items():
            if not isinstance(value, torch.Tensor) or value.dim() != 3 or value.shape[-1] != self.config.head_size:
                raise ValueError(f"patched output of L{layer}H{head} must be a (B, N, {self.config.head_size}) tensor")
        with self._replacing({key: ("patch", value.detach()) for key, value in outputs.items()}):
            yield self

    @contextlib.contextmanager
    def _replacing(self, state: Mapping[tuple[int, int], tuple]) -> Iterator[None]:
        """Set {(layer, head): (mode, value)} on the attention modules for the block; restore the previous state."""
        for layer, head in state:
            if not (0 <= layer < self.config.n_layers and 0 <= head < self.config.n_heads):
                raise ValueError(f"no head L{layer}H{head} in a {self.config.n_layers}x{self.config.n_heads} model")
        before = [dict(layer.causal_attention._ablation) for layer in self.layers]
        try:
            for (layer, head), entry in state.items():
                self.layers[layer].causal_attention._ablation[head] = entry
            yield
        finally:
            for layer, saved in zip(self.layers, before):
                layer.causal_attention._ablation = saved

    @torch.no_grad()
    def generate(
        self,
        prefix: torch.Tensor,
        n_new: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample `n_new` tokens after `prefix` (N,) with temperature and optional top-k; return (N + n_new,)."""
        idx = prefix.clone()
        ctx = self.config.max_context_len
        for _ in range(n_new):
            logits = self(idx[-ctx:].unsqueeze(0))[0, -1]  # (vocab,)
            if temperature <= 0:
                nxt = logits.argmax().view(1)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)
            idx = torch.cat([idx, nxt])
        return idx
