"""How heads contribute to generated text: samples with and without the strongest role heads, the
per-character loss change on a held-out passage, and, per role head, the next-character predictions
its removal changes most (top 3 before and after, with probabilities)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import ModelBundle
from .evidence import Generation, Prediction, RoleEffect

TEMPERATURE = 0.8  # sampling settings for generation with and without role heads
TOP_K = 10
LN2 = float(np.log(2.0))
SENTENCE = 64  # characters of held-out text for the per-role predictions (at most the context)


@torch.no_grad()
def generate_pair(bundle: ModelBundle, prompt: str, heads: list[tuple[int, int]], seed: int,
                  means: dict | None, n_new: int = 160, mode: str = "mean") -> tuple[str, str]:
    """Samples from one prompt with the full model and with `heads` ablated (same seed)."""
    tok = bundle.tokenizer
    prefix = torch.tensor(tok.tokenize(prompt))
    full = bundle.model.generate(prefix, n_new, temperature=TEMPERATURE, top_k=TOP_K,
                                 generator=torch.Generator().manual_seed(seed))
    with bundle.model.ablate({h: mode for h in heads}, means=means):
        ablated = bundle.model.generate(prefix, n_new, temperature=TEMPERATURE, top_k=TOP_K,
                                        generator=torch.Generator().manual_seed(seed))
    return tok.detokenize(full.tolist()), tok.detokenize(ablated.tolist())


@torch.no_grad()
def _log_probs(bundle: ModelBundle, text: str, heads: list[tuple[int, int]], means: dict | None,
               mode: str = "mean") -> torch.Tensor:
    """Log-probabilities (N-1, V) of the next character after each prefix of `text`, with `heads` ablated."""
    ids = torch.tensor([bundle.tokenizer.tokenize(text)])
    with bundle.model.ablate({h: mode for h in heads}, means=means):
        return F.log_softmax(bundle.model(ids[:, :-1])[0], -1)


def per_char_delta(bundle: ModelBundle, text: str, heads: list[tuple[int, int]], means: dict | None,
                   mode: str = "mean") -> list[tuple[str, float]]:
    """Per-character loss change (bits) on `text` when `heads` are ablated."""
    ids = torch.tensor(bundle.tokenizer.tokenize(text))[1:, None]
    base = -_log_probs(bundle, text, [], means).gather(1, ids)[:, 0] / LN2
    abl = -_log_probs(bundle, text, heads, means, mode).gather(1, ids)[:, 0] / LN2
    return [(c, float(d)) for c, d in zip(text[1:], (abl - base).tolist())]


def generation_evidence(bundle: ModelBundle, prompt: str, heldout: str, heads: list[tuple[int, int]], seed: int,
                        means: dict | None) -> Generation | None:
    """Samples with and without `heads`, and the loss change they cause on the start of the held-out text."""
    if not heads or not prompt or bundle.tokenizer.unknown_chars(prompt):
        return None
    full, ablated = generate_pair(bundle, prompt, heads, seed, means)
    passage = heldout[:min(120, bundle.config.max_context_len)]  # one forward pass: within the context
    return Generation(prompt, [f"L{l}H{h}" for l, h in heads], full, ablated,
                      per_char_delta(bundle, passage, heads, means), TEMPERATURE, TOP_K)


def prompt_for(language_prompt: str, own_text: bool, heldout: str, tokenizer) -> str:
    """The generation prompt: the language's own for its default corpus, else (and whenever the model cannot
    read it) the first words of the held-out text, so samples start from the run's own kind of text."""
    if language_prompt and not own_text and not tokenizer.unknown_chars(language_prompt):
        return language_prompt
    line = heldout_sentence(heldout, 64)[:24]
    return line[: line.rfind(" ")] if " " in line[8:] else line


def heldout_sentence(heldout: str, context: int) -> str:
    """A short held-out passage that starts at a line start: the first line of 30+ characters, cut to fit."""
    n = min(SENTENCE, context)
    for line in heldout.splitlines():
        if len(line) >= 30:
            return line[:n]
    return heldout[:n]


def role_predictions(bundle: ModelBundle, text: str, layer: int, head: int, role: str, means: dict | None,
                     n: int = 3, example=None) -> RoleEffect | None:
    """The `n` next-character predictions on `text` whose probability of the true character changes most
    when the head is mean-ablated, with the top 3 candidates before and after."""
    if len(text) < 2:
        return None
    vocab = bundle.tokenizer.vocab
    ids = torch.tensor(bundle.tokenizer.tokenize(text))[1:]
    before = _log_probs(bundle, text, [], means).exp()
    after = _log_probs(bundle, text, [(layer, head)], means).exp()
    p0, p1 = before.gather(1, ids[:, None])[:, 0], after.gather(1, ids[:, None])[:, 0]
    change = (p1.clamp_min(1e-9).log() - p0.clamp_min(1e-9).log()).abs()
    picks = sorted(torch.argsort(change, descending=True)[:n].tolist())
    top = lambda p: [(vocab[i], float(p[i])) for i in torch.argsort(p, descending=True)[:3].tolist()]
    preds = [Prediction(k + 1, text[max(0, k - 15):k + 1], text[k + 1], float(p0[k]), float(p1[k]), top(before[k]),
                        top(after[k])) for k in picks]
    return RoleEffect(layer, head, f"L{layer}H{head}", role, text, preds, example)
