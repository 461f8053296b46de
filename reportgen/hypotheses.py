"""Your own hypotheses: `[[hypothesis]]` tables in the TOML settings, scored like the built-in detectors.

A hypothesis names which queries it is about (characters, a character class or a regex; default all)
and which keys they should read (characters, a class, a regex, or a fixed offset back). Its value is the
head's attention on those keys per query it is about, pooled over a split: each window's sum over its
matching queries, divided by the split's share of valid queries that match (`query_shares`), so the
mean over windows is the mean over every matching query. The kind of keys picks the built-in detectors
whose nulls and rule it gets (catalogue `hypothesis_keys`, `hypothesis_rule`), so a hypothesis that restates a built-in
detector (every query; `key_offset = 1`, `key_class = "vowel"`) has its numbers and its verdict:

* `key_offset`: like the fixed-offset detectors, uniform chance only (a positional or label-swap null
  of a fixed offset contains that offset), and the mass rule;
* `key_class`, `key_chars`: like the class detectors, the positional, label-swap and word-structure
  nulls and the class rule (a head reading word starts or the last boundary is not a head for a set
  of characters unless it exceeds what those keys give); a letter `key_class` also the class-wide gate,
  on the per-character profile of the queries it is about (`_profiles`, `class_wide`);
* `key_regex`: like the target-set detectors (word start, ...), the positional and label-swap nulls and
  their rule (a regex often marks word structure itself, so no word-structure null).

    [[hypothesis]]
    name = "s_reads_word_start"
    description = "an s reads the first letter of its word"
    query_chars = "s"
    key_regex = "\\\\b\\\\w"          # keys where a word starts
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import re2
import torch

from .catalogue import LETTER_CLASSES, hypothesis_keys
from .classes import CLASS_NAMES
from .classwide import class_wide_fields
from .keysets import SKIP, boundary_targets, keys_product, window_text, word_initial
from .profiles import structure_shares
from .languages import without_bidi_controls
from .errors import ReportgenError

NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
QUERY_KEYS = ("query_chars", "query_class", "query_regex")
KEY_KEYS = ("key_chars", "key_class", "key_regex", "key_offset")
_RE2 = re2.Options()
_RE2.log_errors = False  # a bad pattern is our one-line error, not a log line on stderr
ESCAPE = re.compile(r"\\(.)", re.S)  # a backslash escape (an escaped backslash is one, so \\\\b is no \\b)


def compile_regex(pattern: str):
    """A user regex compiled by RE2 (Google's engine: no backtracking, so every search is linear in the text;
    no backreferences or lookaround). Raises re2.error with RE2's reason for what it cannot compile."""
    return re2.compile(pattern, _RE2)


def ascii_only(pattern: str) -> str | None:
    """The first of \\b \\B \\w \\W in a pattern (RE2 gives them ASCII meanings only), or None."""
    return next((f"\\{m.group(1)}" for m in ESCAPE.finditer(pattern) if m.group(1) in "bBwW"), None)


@dataclass(frozen=True)
class Hypothesis:
    name: str
    description: str
    query_chars: str | None = None
    query_class: str | None = None
    query_regex: str | None = None
    key_chars: str | None = None
    key_class: str | None = None
    key_regex: str | None = None
    key_offset: int | None = None

    @property
    def detector(self) -> str:
        return f"hyp_{self.name}"

    @property
    def keys(self) -> str:
        """Which built-in detectors it is judged like: 'offset', 'class' (key_class, key_chars) or 'target'."""
        return hypothesis_keys(vars(self))

    def _positions(self, chars: str | None, cls: str | None, regex: str | None, text: str,
                   codes: torch.Tensor) -> torch.Tensor | None:
        """Bool (T,) of positions selected by characters, class or regex (None: no selector given)."""
        T = len(text)
        if chars is not None:
            return torch.tensor([c in chars for c in text], dtype=torch.bool)
        if cls is not None:
            return codes == CLASS_NAMES.index(cls)
        if regex is not None:
            out = torch.zeros(T, dtype=torch.bool)
            for m in compile_regex(regex).finditer(text):
                if m.start() < T:
                    out[m.start()] = True
            return out
        return None

    @property
    def has_query(self) -> bool:
        return any(v is not None for v in (self.query_chars, self.query_class, self.query_regex))

    def query_positions(self, ids: torch.Tensor, codes: torch.Tensor, vocab: list[str]) -> torch.Tensor:
        """Bool (B, T): the positions this hypothesis is about (every position if it names no queries); also its
        targeted-ablation contrast (predicting the character after them)."""
        rows = []
        for b in range(ids.shape[0]):
            text = window_text(ids[b], vocab)
            q = self._positions(self.query_chars, self.query_class, self.query_regex, text, codes[b])
            rows.append(torch.ones(ids.shape[1], dtype=torch.bool) if q is None else q)
        return torch.stack(rows)

    def key_positions(self, ids: torch.Tensor, codes: torch.Tensor, vocab: list[str]) -> torch.Tensor:
        """Bool (B, S): the keys it names by content (characters, class or regex; not for `key_offset`)."""
        return torch.stack([self._positions(self.key_chars, self.key_class, self.key_regex,
                                            window_text(ids[b], vocab), codes[b]) for b in range(ids.shape[0])])

    def mask(self, ids: torch.Tensor, codes: torch.Tensor, vocab: list[str]) -> torch.Tensor:
        """Target mask (B, T, S): query i is one the hypothesis is about and key j <= i one it should read."""
        B, T = ids.shape
        i, j = torch.arange(T).view(T, 1), torch.arange(T).view(1, T)
        queries = self.query_positions(ids, codes, vocab)  # (B, T)
        if self.key_offset is not None:
            keys = (j == i - self.key_offset).expand(B, T, T)
        else:
            keys = self.key_positions(ids, codes, vocab).view(B, 1, T) & (j <= i)
        return queries.view(B, T, 1) & keys


def parse(entries, source: str) -> tuple[Hypothesis, ...]:
    """Hypotheses from TOML `[[hypothesis]]` tables; every mistake is a one-line error naming the entry."""
    if not isinstance(entries, list):
        raise ReportgenError(f"{source}: hypotheses are given as [[hypothesis]] tables")
    out, names = [], set()
    for n, e in enumerate(entries, 1):
        where = f"{source}: hypothesis {n}"
        if not isinstance(e, dict):
            raise ReportgenError(f"{where}: must be a table")
        unknown = set(e) - {"name", "description", *QUERY_KEYS, *KEY_KEYS}
        if unknown:
            raise ReportgenError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        name = e.get("name")
        if not isinstance(name, str) or not NAME.match(name) or name in names:
            raise ReportgenError(f"{where}: needs a unique name of lowercase letters, digits and _ (got {name!r})")
        names.add(name)
        queries = [k for k in QUERY_KEYS if k in e]
        keys = [k for k in KEY_KEYS if k in e]
        if len(queries) > 1 or len(keys) != 1:
            raise ReportgenError(f"{where} ({name}): give at most one of {', '.join(QUERY_KEYS)} and exactly one "
                                 f"of {', '.join(KEY_KEYS)}")
        for k in queries + keys:
            v = e[k]
            if k == "key_offset":
                if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 64:
                    raise ReportgenError(f"{where} ({name}): key_offset must be a whole number from 0 to 64")
            elif not isinstance(v, str) or not v:
                raise ReportgenError(f"{where} ({name}): {k} must be a non-empty string")
            elif k.endswith("_class") and v not in CLASS_NAMES:
                raise ReportgenError(f"{where} ({name}): {k} must be one of {', '.join(CLASS_NAMES)}, not {v!r}")
            elif k.endswith("_regex"):
                try:
                    if any(m.group(1) == "C" for m in ESCAPE.finditer(v)):
                        raise re2.error("\\C matches one byte of a UTF-8 character")
                    compile_regex(v)
                except re2.error as exc:
                    reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) \
                        else str(exc)
                    reason = "".join(c if c.isprintable() else repr(c)[1:-1] for c in reason)
                    raise ReportgenError(f"{where} ({name}): bad regex {v!r} for RE2, the linear-time engine "
                                         f"hypotheses use ({reason}; no backreferences or lookaround)") from None
        description = e.get("description", "")
        if not isinstance(description, str):
            raise ReportgenError(f"{where} ({name}): description must be a string")
        description = without_bidi_controls(description)  # it must not reorder the model page around it
        out.append(Hypothesis(name, description or name.replace("_", " "),
                              **{k: e[k] for k in queries + keys}))
    return tuple(out)


def check_targets(hyps: tuple[Hypothesis, ...], ids: torch.Tensor, codes: torch.Tensor, vocab: list[str],
                  source: str) -> None:
    """Each hypothesis must have targets in the text (an empty target set is a mistake, not a null result), and no
    regex may lean on RE2's ASCII-only \\b or \\w when the vocabulary has other letters (it would miss them)."""
    wide = any(len(c) == 1 and c.isalpha() and not c.isascii() for c in vocab)
    for h in hyps:
        for k, v in (("query_regex", h.query_regex), ("key_regex", h.key_regex)):
            escape = ascii_only(v) if v is not None and wide else None
            if escape:
                raise ReportgenError(f"{source}: hypothesis {h.name!r}: {k} uses {escape}, which RE2 applies to ASCII "
                                     f"letters only, and this vocabulary has others; use \\pL (a letter), \\PL "
                                     f"(not a letter) or [\\pL\\pN_] instead")
        if not h.mask(ids, codes, vocab)[:, SKIP:].any():
            raise ReportgenError(f"{source}: hypothesis {h.name!r} has no query-key pair in the text; check its "
                                 f"characters, class or regex")


def _query_mean(x: torch.Tensor) -> torch.Tensor:
    return x[..., SKIP:].mean(-1)


def query_shares(hyps, windows: torch.Tensor, codes: torch.Tensor, vocab: list[str]) -> dict[str, float]:
    """Per hypothesis, the share of a split's valid queries (i >= SKIP; `windows` (W, T) all of its windows) that it
    is about: 1.0 exactly when it names no queries. Its window values are divided by it (1.0 if none match)."""
    out = {}
    for h in hyps:
        share = float(h.query_positions(windows, codes, vocab)[:, SKIP:].double().mean()) if h.has_query else 1.0
        out[h.detector] = share or 1.0
    return out


def _structure(h: Hypothesis, attn: torch.Tensor, ids: torch.Tensor, codes: torch.Tensor, vocab: list[str],
               queries: torch.Tensor) -> torch.Tensor:
    """The word-structure null of a hypothesis over characters: `profiles.structure_null` (the class detectors')
    for its key set, per query and summed over the queries it is about, `_query_mean`-ed (B, L, H). Per query:
    the head's own mass on word-initial keys (of every word so far) and on the most recent boundary, where those
    keys are ones it names, plus the rest of its mass spread uniformly over the other keys."""
    B, L, H, T, _ = attn.shape
    keys = h.key_positions(ids, codes, vocab).float()  # (B, S)
    initial = word_initial(codes).float()  # (B, S)
    recent, _ = boundary_targets(codes)
    has_recent = (recent >= 0).float()
    masses = keys_product(attn, torch.stack([initial * keys, initial], -1))  # (B, L, H, T, 2)
    recent_mass = attn.gather(-1, recent.clamp_min(0).view(B, 1, 1, T, 1).expand(B, L, H, T, 1)).squeeze(-1)
    recent_mass = recent_mass * has_recent.view(B, 1, 1, T)
    recent_in, share = (x[..., 0] for x in structure_shares(keys.unsqueeze(-1), codes))  # (B, T) each
    null = (masses[..., 0] + recent_mass * recent_in.view(B, 1, 1, T)
            + (1 - masses[..., 1] - recent_mass) * share.view(B, 1, 1, T))
    return _query_mean(null * queries.view(B, 1, 1, T))


def scores(hyps, attn: torch.Tensor, ids: torch.Tensor, codes: torch.Tensor, vocab: list[str],
           partner_labels: tuple[torch.Tensor, torch.Tensor] | None,
           shares: dict[str, float] | None = None) -> tuple[dict, dict, dict, dict, dict]:
    """Observed, chance, label-swap and word-structure values (B, L, H) of every hypothesis on one batch, per query
    it is about (divided by its `query_shares`, default 1), and the per-character profiles of letter-class ones
    (`_profiles`). The swap null scores each window against its partner's (ids, codes), NaN without a partner;
    only hypotheses over characters and classes have a word-structure null, and fixed-offset ones neither null
    (uniform chance only, as the fixed-offset detectors)."""
    B, L, H, T, S = attn.shape
    obs, chance, swap, structure, profiles = {}, {}, {}, {}, {}
    uniform = 1.0 / torch.arange(1, T + 1, dtype=torch.float32)
    products = _products(hyps, attn, ids, codes, vocab, partner_labels)
    for h in hyps:
        share = (shares or {}).get(h.detector, 1.0)
        mass, targets = _target_mass(h, attn, ids, codes, vocab, products.get((h.detector, "own")))
        obs[h.detector] = _query_mean(mass) / share
        chance[h.detector] = (_query_mean(targets * uniform) / share).view(B, 1, 1).expand(B, L, H)
        if h.keys == "offset":
            continue
        if partner_labels is None:
            swap[h.detector] = torch.full_like(obs[h.detector], float("nan"))
        else:
            swap[h.detector] = _query_mean(_target_mass(h, attn, *partner_labels, vocab,
                                                        products.get((h.detector, "partner")))[0]) / share
        if hasattr(h, "structure"):  # a key set with its own simpler explanations (caseclasses.CaseClass)
            structure[h.detector] = h.structure(attn, ids, codes, vocab, products.get((h.detector, "explained")))
        elif h.keys == "class":
            queries = h.query_positions(ids, codes, vocab).to(attn.dtype)
            structure[h.detector] = _structure(h, attn.float(), ids, codes, vocab, queries) / share
            if h.key_class in LETTER_CLASSES:
                profiles.update(_profiles(h, attn.float(), ids, queries, len(vocab), share))
    return obs, chance, swap, structure, profiles


def _target_mass(h, attn: torch.Tensor, ids: torch.Tensor, codes: torch.Tensor, vocab: list[str],
                 product: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query's attention mass on the keys `h` reads (B, L, H, T), zero at queries it is not about, and the
    number of such keys in view (B, T) (`h.mask(...).sum(-1)`), on these labels. A key set (not a fixed offset)
    is one matrix product with its keys (causal attention is zero above the diagonal, where the mask is) and a
    running count: ~20x less memory traffic than weighting every (query, key) pair by the mask. `product`: that
    product (B, L, H, T), computed already (`_products`)."""
    B, L, H, T, S = attn.shape
    if h.keys == "offset":
        mask = h.mask(ids, codes, vocab).to(attn.dtype)  # (B, T, S)
        return (attn * mask.view(B, 1, 1, T, S)).sum(-1), mask.sum(-1)
    keys = h.key_positions(ids, codes, vocab).to(attn.dtype)  # (B, S)
    queries = h.query_positions(ids, codes, vocab).to(attn.dtype)  # (B, T)
    product = keys_product(attn, keys.unsqueeze(-1))[..., 0] if product is None else product
    return product * queries.view(B, 1, 1, T), keys.cumsum(1) * queries


def _products(hyps, attn: torch.Tensor, ids: torch.Tensor, codes: torch.Tensor, vocab: list[str],
              partner_labels: tuple[torch.Tensor, torch.Tensor] | None) -> dict:
    """Every key-set product the hypotheses read on one batch, from one `keys_product` (the attention read once,
    not once per key set: each read is a pass over (B, L, H, T, S)): (detector, "own" | "partner") -> (B, L, H, T)
    of its key set, and (detector, "explained") -> (B, L, H, T, 2k) of a case class's simpler explanations
    (`caseclasses.CaseClass.structure`)."""
    columns, slots = [], {}
    for h in hyps:
        if h.keys == "offset":
            continue
        sets = {"own": [h.key_positions(ids, codes, vocab)]}
        if partner_labels is not None:
            sets["partner"] = [h.key_positions(*partner_labels, vocab)]
        if hasattr(h, "explanations"):
            sets["explained"] = [x for e in h.explanations(ids, codes, vocab) for x in (e.float(), 1 - e.float())]
        for name, keys in sets.items():
            slots[h.detector, name] = slice(len(columns), len(columns) + len(keys))
            columns += [k.to(attn.dtype) for k in keys]
    if not columns:
        return {}
    product = keys_product(attn, torch.stack(columns, -1))  # (B, L, H, T, F)
    return {k: product[..., v] if k[1] == "explained" else product[..., v.start] for k, v in slots.items()}


def _profiles(h: Hypothesis, attn: torch.Tensor, ids: torch.Tensor, queries: torch.Tensor, vocab_size: int,
              share: float) -> dict[str, torch.Tensor]:
    """`profiles.profile_stats`' per-character profile over the queries a letter-class hypothesis is about:
    '<detector>:<class>:char_mass' (B, L, H, V) its attention per key character and ':char_chance' (B, V) the
    same under uniform causal attention, query means per query it is about (the class-wide gate's inputs)."""
    T = ids.shape[1]
    q = queries[:, SKIP:]  # (B, T')
    chars = torch.nn.functional.one_hot(ids, vocab_size).float()  # (B, S, V)
    colmean = (attn[..., SKIP:, :] * q.view(q.shape[0], 1, 1, -1, 1)).sum(-2) / (T - SKIP)  # (B, L, H, S)
    uniform = chars.cumsum(1)[:, SKIP:] / torch.arange(SKIP + 1, T + 1, dtype=torch.float32).view(1, -1, 1)
    key = f"{h.detector}:{h.key_class}"
    return {f"{key}:char_mass": torch.einsum("blhs,bsv->blhv", colmean, chars) / share,
            f"{key}:char_chance": (uniform * q.unsqueeze(-1)).sum(1) / (T - SKIP) / share}


def class_wide(profiles: dict[str, np.ndarray], counts: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """detector -> the class-wide gate's fields (K,) of every letter-class hypothesis (`classwide.class_wide_fields`
    on its own profile, `_profiles`); resample counts (R, W) as the split's."""
    out = {}
    for key in [k for k in profiles if k.endswith(":char_mass")]:
        detector, cls, _ = key.split(":")
        own = {"char_mass": profiles[key], "char_chance": profiles[f"{detector}:{cls}:char_chance"],
               "char_class": profiles["char_class"]}
        out[detector] = class_wide_fields(own, counts)[f"class_{cls}"]
    return out


def positional(hyps, mean_attn: torch.Tensor, ids: torch.Tensor, codes: torch.Tensor, vocab: list[str],
               shares: dict[str, float] | None = None) -> dict:
    """Each hypothesis over content (not `key_offset`) under the head's mean attention pattern (renormalised rows),
    per query it is about: (W, L, H)."""
    rows = mean_attn / mean_attn.sum(-1, keepdim=True).clamp_min(1e-12)
    return {h.detector: _query_mean(torch.einsum("lhis,wis->wlhi", rows, h.mask(ids, codes, vocab).float()))
            / (shares or {}).get(h.detector, 1.0) for h in hyps if h.keys != "offset"}
