"""Capture: run a model over text windows and stream detector statistics (memory flat in text size).

Torch stops here: the returned `HeadScores` holds numpy arrays only. Shapes: W windows,
L layers, H heads, T query positions, S key positions.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import ModelBundle
from .classes import CharClasses
from .detectors import CLASS_C, SKIP, batch_stats, class_onehot, content_chance, swap_partners
from .errors import ReportgenError
from .querychars import accumulate as accumulate_query_chars
from .hypotheses import positional as hypothesis_positional
from .hypotheses import query_shares
from .hypotheses import scores as hypothesis_scores
from .nulls import positional_null
from .profiles import char_chance

LN2 = float(np.log(2.0))
SUM_FLOATS = 16 * 16 * 128 * 128  # attention values per partial sum of the mean attention (16 windows of a 4 x 4-head,
# context-128 model): a fixed grouping, so the mean is the same float32 number whatever the piece size.
PIECE_FLOATS = 2 * SUM_FLOATS  # attention values scored per call (32 MB): fewer, larger calls beat cache-sized ones
# now that scoring reads only the causal blocks (measured: 1.39-1.41 s vs 1.44-1.45 s per 512 windows).


@dataclass(frozen=True)
class HeadScores:
    """Per-window detector values for one model on one split: name -> (W, L, H) arrays."""

    observed: dict[str, np.ndarray]
    chance: dict[str, np.ndarray]
    swap: dict[str, np.ndarray]  # content detectors only
    positional: dict[str, np.ndarray]  # content detectors only
    structure: dict[str, np.ndarray]  # class detectors only: the word-structure null
    mean_attn: np.ndarray  # (L, H, T, S) mean attention over windows
    class_matrix: np.ndarray  # (L, H, C, C) mean key-class mass per query class
    class_chance: np.ndarray  # (C, C) the same under uniform causal attention
    class_count: np.ndarray  # (C,) valid queries per class
    window_starts: np.ndarray  # (W,) character offsets of the windows in the text
    swap_partner: np.ndarray  # (W,) index of the window whose characters each window's label-swap null used
    samples: list[tuple[str, np.ndarray]] = field(default_factory=list)  # (text, attn (L, H, T, T))
    profiles: dict[str, np.ndarray] = field(default_factory=dict)  # `profiles.profile_stats` per window (W, ...),
    # with char_chance (W, V) and char_class (V,)
    query_chars: dict | None = None  # `querychars.accumulate` sums: attention by query character

    @property
    def n_windows(self) -> int:
        """Number of windows (the resampling unit)."""
        return len(self.window_starts)


OOV_MAX_SHARE = 0.05  # --oov drop/replace refuse a text with more of its characters outside the vocabulary


def encode(bundle: ModelBundle, text: str, source: str, oov: str = "error", shares: dict | None = None,
           max_share: float = OOV_MAX_SHARE) -> np.ndarray:
    """Text -> token ids (N,), applying the out-of-vocabulary policy; errors name `source`. Dropping or replacing
    more than `max_share` of the characters is refused (the text is then mostly not the model's own kind); the
    share dropped or replaced is said, and stored in `shares[source]` when a dict is passed."""
    if not text.strip():
        raise ReportgenError(f"{source}: text is empty")
    n = len(text)
    text, changed = bundle.tokenizer.clean(text, policy=oov, source=source)
    if changed:
        share = changed / n
        verb = "dropped" if oov == "drop" else "replaced"
        if share > max_share:
            raise ReportgenError(f"{source}: {changed} of {n} characters ({share:.1%}) are outside the model's "
                                 f"vocabulary, more than the {max_share:.0%} --oov {oov} accepts; is this text in "
                                 f"the model's language and script?")
        from .progress import say

        say(f"{source}: {verb} {changed} character(s) outside the vocabulary ({share:.2%} of the text)")
        if shares is not None:
            shares[source] = share
    if not text.strip():
        raise ReportgenError(f"{source}: no character of the text is in the model's vocabulary")
    chars = sorted((ord(c), i) for c, i in bundle.tokenizer.stoi.items() if len(c) == 1)
    points = np.array([p for p, _ in chars], dtype=np.uint32)
    ids = np.array([i for _, i in chars], dtype=np.int64)
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # one code point per character
    return ids[np.searchsorted(points, codes)]  # every character is in the vocabulary after clean()


def window_starts(n_chars: int, length: int, limit: int | None, source: str) -> np.ndarray:
    """Starts of non-overlapping windows; `limit` of them evenly spread, or all."""
    n = n_chars // length
    if n == 0:
        raise ReportgenError(f"{source}: text has {n_chars} characters, shorter than one window of {length}")
    starts = np.arange(n) * length
    if limit is not None and limit < n:
        starts = starts[np.linspace(0, n - 1, limit).round().astype(int)]
    return starts


@torch.no_grad()
def capture(bundle: ModelBundle, ids: np.ndarray, classes: CharClasses, *, limit: int | None = None,
            batch_size: int = 32, n_samples: int = 4, source: str = "text", on_batch=None,
            hypotheses: tuple = (), query_chars: bool = False, losses: list | None = None) -> HeadScores:
    """Run the model over windows of `ids` and score every detector per batch (memory flat in text size); with
    `query_chars`, also sum attention by query character (`querychars.accumulate`, for the head pages); with a
    `losses` list, also append each window's loss in bits of predicting characters 1..T-1 (numpy (b, T-1) per
    piece, in window order), from the same forward passes (the full model, its last layer's MLP and logits too)."""
    model = bundle.model
    T = model.config.max_context_len
    starts = window_starts(len(ids), T, limit, source)
    if len(starts) < 2:
        raise ReportgenError(f"{source}: need at least 2 windows of {T} characters for statistics, got {len(starts)}")
    windows = torch.as_tensor(np.stack([ids[s:s + T] for s in starts]))  # (W, T)

    cfg = model.config
    unit = max(1, SUM_FLOATS // (cfg.n_layers * cfg.n_heads * T * T))
    piece = unit * max(1, PIECE_FLOATS // SUM_FLOATS)

    device = model.word_prediction.weight.device
    buffer = torch.empty(cfg.n_layers, min(piece, len(windows)), cfg.n_heads, T, T, device=device)

    def pieces(batch):  # each piece is scored before the next overwrites the buffer
        for lo in range(0, len(batch), piece):
            b = len(batch[lo:lo + piece])
            out = buffer if b == buffer.shape[1] else buffer[:, :b].contiguous()  # a short last piece: its own
            if losses is None:
                yield model.attention(batch[lo:lo + piece], out)  # (b, L, H, T, S)
                continue
            part = batch[lo:lo + piece].to(device)
            logits, weights = model(part, True, out)
            nats = F.cross_entropy(logits[:, :-1].transpose(1, 2).float(), part[:, 1:], reduction="none")
            losses.append((nats / LN2).double().cpu().numpy())
            yield weights.transpose(0, 1).to(batch.device)  # (b, L, H, T, S)

    def batches():
        for lo in range(0, len(windows), batch_size):
            batch = windows[lo:lo + batch_size]  # (B, T): the label-swap pairing's unit
            yield pieces(batch), batch
            if on_batch:
                on_batch(len(batch))

    return score_windows(batches(), windows, classes, bundle.tokenizer.vocab_size(), starts,
                         n_samples=n_samples, detok=bundle.tokenizer.detokenize, hypotheses=hypotheses,
                         vocab=bundle.tokenizer.vocab, sum_unit=unit, query_chars=query_chars)


def score_windows(batches, windows: torch.Tensor, classes: CharClasses, vocab_size: int, starts: np.ndarray,
                  n_samples: int = 4, detok=None, hypotheses: tuple = (), vocab: list[str] | None = None,
                  sum_unit: int | None = None, query_chars: bool = True) -> HeadScores:
    """Accumulate detector statistics over batches of (attention (B, L, H, T, S), ids (B, T)); the attention may
    come as an iterable of pieces along B (scored one by one with the whole batch's label-swap pairing).

    `windows` (W, T) are all windows' ids in batch order (for the positional null). Works on
    any attention, so synthetic attention with planted patterns tests the same code path. The mean attention
    is summed `sum_unit` windows at a time (default: a piece at a time). `query_chars`: sum attention by query
    character too (`querychars.accumulate`).
    """
    lookup = torch.as_tensor(classes.lookup())
    shares = query_shares(hypotheses, windows, lookup[windows], vocab) if hypotheses else {}  # per query it is about
    parts, samples = [], []
    attn_sum = class_matrix = class_count = None
    previous = qchars = None
    partners, done = [], 0  # global label-swap partner of every window, windows scored so far
    for chunks, batch in batches:
        chunks = [chunks] if isinstance(chunks, torch.Tensor) else chunks  # pieces of the batch's attention
        keep, first = 0, done  # rows of the batch that are new windows; global index of row 0
        if len(batch) == 1 and previous is not None:  # a lone window cannot be label-swapped: pair it
            chunks, batch, keep, first = itertools.chain([previous[0]], chunks), torch.cat([previous[1], batch]), 1, done - 1
        B, codes = len(batch), lookup[batch]
        perm = swap_partners(B)  # pairs of the whole batch, whichever piece each window is scored in
        lo = 0
        for attn in chunks:
            hi = lo + len(attn)
            labels = (batch[perm[lo:hi]], codes[perm[lo:hi]]) if B > 1 else None
            stats = batch_stats(attn, batch[lo:hi], codes[lo:hi], vocab_size, labels, with_content_chance=False)
            obs, chance, swap, structure, own = hypothesis_scores(hypotheses, attn, batch[lo:hi], codes[lo:hi], vocab,
                                                                  labels, shares) if hypotheses else ({},) * 5
            scored = {"observed": {**stats.observed, **obs}, "chance": {**stats.chance, **chance},
                      "swap": {**stats.swap, **swap}, "structure": {**stats.structure, **structure},
                      "profiles": {**stats.profiles, **own}}
            parts.append((scored, slice(max(keep - lo, 0), None)))  # rows of new windows, concatenated once at the end
            for b in range(max(lo, keep), hi):
                if len(samples) < n_samples and (keep == 0 or b == keep):
                    text = detok(batch[b].tolist()) if detok else ""
                    samples.append((text, attn[b - lo].numpy().copy()))
            new = attn[max(keep - lo, 0):]
            new_ids = batch[lo:hi][max(keep - lo, 0):]
            if query_chars:
                qchars = accumulate_query_chars(qchars, new, new_ids, lookup[new_ids], vocab_size, CLASS_C, SKIP)
            step = sum_unit or max(len(new), 1)
            for u in range(0, len(new), step):
                summed = new[u:u + step].float().sum(0)
                attn_sum = summed if attn_sum is None else attn_sum + summed
            if keep == 0:
                class_matrix = stats.class_matrix if class_matrix is None else class_matrix + stats.class_matrix
                class_count = stats.class_count if class_count is None else class_count + stats.class_count
            previous = (attn[-1:].clone(), batch[-1:])  # attn may be a reused buffer
            lo = hi
        partners.append(perm[keep:].numpy() + first)
        done += B - keep

    def gather(field_name):  # only per-window (b, L, H) values are kept per piece: memory grows by KBs/window
        names = parts[0][0][field_name].keys()
        return {n: torch.cat([s[field_name][n][k] for s, k in parts]).numpy() for n in names}

    W, T = windows.shape
    mean_attn = attn_sum / W  # (L, H, T, S)
    positional: dict[str, list[np.ndarray]] = {}
    pos = torch.arange(T, dtype=torch.float32)[SKIP:]
    chance_sum = torch.zeros(CLASS_C, CLASS_C, dtype=torch.float64)  # float64: the same sum at any thread count
    query_count = torch.zeros(CLASS_C)
    chances: dict[str, list[torch.Tensor]] = {}
    for lo in range(0, W, 256):  # chunks keep the (W, L, H, T, C) intermediates small
        chunk = windows[lo:lo + 256]
        chances.setdefault("char_chance", []).append(char_chance(chunk, vocab_size))
        for name, value in content_chance(chunk, lookup[chunk], vocab_size).items():  # labels only: once per window
            chances.setdefault(name, []).append(value)
        nulls = positional_null(mean_attn, chunk, lookup[chunk])
        if hypotheses:
            nulls.update(hypothesis_positional(hypotheses, mean_attn, chunk, lookup[chunk], vocab, shares))
        for name, value in nulls.items():
            positional.setdefault(name, []).append(value.numpy())
        codes = class_onehot(lookup[chunk])  # (w, T, C)
        prefix = codes.cumsum(1)[:, SKIP:] / (pos.view(1, -1, 1) + 1)  # (w, T', C) uniform causal share
        chance_sum += torch.einsum("wiq,wic->qc", codes[:, SKIP:].double(), prefix.double())
        query_count += codes[:, SKIP:].sum((0, 1))
    class_chance = chance_sum / query_count.clamp_min(1).view(-1, 1)
    counts = class_count.clamp_min(1).view(1, 1, -1, 1)
    observed, chance = gather("observed"), gather("chance")
    L, H = mean_attn.shape[:2]
    profiles = {**gather("profiles"), "char_chance": torch.cat(chances.pop("char_chance")).numpy(),
                "char_class": lookup.numpy()}
    chance.update({n: torch.cat(v).view(W, 1, 1).expand(W, L, H).numpy().copy() for n, v in chances.items()})
    return HeadScores(
        observed=observed, chance={n: chance[n] for n in observed}, swap=gather("swap"), structure=gather("structure"),
        positional={n: np.concatenate(v) for n, v in positional.items()},
        mean_attn=mean_attn.numpy(), class_matrix=(class_matrix / counts).numpy(),
        class_chance=class_chance.numpy(), class_count=class_count.numpy(),
        window_starts=np.asarray(starts), swap_partner=np.concatenate(partners), samples=samples, profiles=profiles,
        query_chars=qchars)


@dataclass(frozen=True)
class ProbeScores:
    """Repeated-sequence probes: per probe (P,) and head (L, H) scores, plus copy losses."""

    kind: str
    period: int
    observed: np.ndarray  # (P, L, H) mean attention from later copies to the token after the match
    chance: np.ndarray  # (P, L, H)
    positional: np.ndarray  # (P, L, H) the same from the head's mean text attention pattern
    loss_first: np.ndarray  # (P,) bits/char on the first copy
    loss_repeat: np.ndarray  # (P,) bits/char on the later copies
    example: str


def random_probes(classes: CharClasses, n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Sequences (n, length) of random letters repeating with a period that has no repeated letter."""
    from .languages import LANGUAGE

    lang = LANGUAGE.get(classes.language)
    letters = [i for i, c in enumerate(classes.vocab) if len(c) == 1 and c.isalpha()]
    own = [i for i in letters if lang is not None and lang.letters(classes.vocab[i])]
    letters = own if len(own) >= 2 else letters  # the model's own script when it has one
    period = min(25, len(letters), length // 2)
    if period < 2:
        raise ReportgenError("vocabulary has too few letters for repeated-sequence probes")
    seqs = []
    for _ in range(n):
        unit = rng.choice(letters, size=period, replace=False)
        seqs.append(np.resize(unit, length))
    return np.stack(seqs), period


def natural_probes(ids: np.ndarray, n: int, length: int) -> tuple[np.ndarray, int]:
    """Held-out passages of length // 2 repeated twice, evenly spread over the text: (n, length)."""
    period = length // 2
    usable = len(ids) - period
    if usable <= 0:
        raise ReportgenError("held-out text is shorter than half a window; cannot build repeated passages")
    starts = np.linspace(0, usable - 1, n).round().astype(int)
    return np.stack([np.tile(ids[s:s + period], 2)[:length] for s in starts]), period


@torch.no_grad()
def probe(bundle: ModelBundle, seqs: np.ndarray, period: int, kind: str, mean_attn: np.ndarray,
          batch_size: int = 32) -> ProbeScores:
    """Score induction on repeated sequences: attention from i to i - period + 1 for i >= period."""
    model = bundle.model
    P, T = seqs.shape
    pos = np.arange(period, T)
    obs, losses_first, losses_rep = [], [], []
    for lo in range(0, P, batch_size):
        batch = torch.as_tensor(seqs[lo:lo + batch_size])  # (B, T)
        logits, attn = model(batch, return_attention_weights=True)  # (B, T, V), (L, B, H, T, S)
        target = attn[..., pos, pos - period + 1]  # (L, B, H, T')
        obs.append(target.mean(-1).permute(1, 0, 2).numpy())  # (B, L, H)
        nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), batch[:, 1:], reduction="none") / LN2  # (B, T-1)
        losses_first.append(nll[:, : period - 1].mean(1).numpy())  # predicting positions 1..period-1
        # predicting positions period+1..T-1: the later copies from their second character on, so each copy is
        # scored at the same offsets as the first (a copy's first character follows the end of the one before it,
        # which no copying predicts: counting it made the repeat look worse by ~0.2 bits/char in English)
        losses_rep.append(nll[:, period:].mean(1).numpy())
    observed = np.concatenate(obs)
    L, H = observed.shape[1:]
    chance = np.full_like(observed, float(np.mean(1.0 / (pos + 1))))
    rows = mean_attn / np.clip(mean_attn.sum(-1, keepdims=True), 1e-12, None)
    positional = np.broadcast_to(rows[..., pos, pos - period + 1].mean(-1), observed.shape).copy()
    return ProbeScores(kind, period, observed, chance, positional, np.concatenate(losses_first),
                       np.concatenate(losses_rep), bundle.tokenizer.detokenize(seqs[0].tolist()))
