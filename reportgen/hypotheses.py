"""Your own hypotheses: `[[hypothesis]]` tables in the TOML settings, scored like the built-in detectors.

A hypothesis names which queries it is about (characters, a character class or a regex; default all)
and which keys they should read (characters, a class, a regex, or a fixed offset back). Its value per
window is the head's attention on those keys summed over the matching queries, divided by all valid
queries (queries it is not about contribute nothing to the value nor to its chance), so the ratio to
its nulls (lift) is the per-query ratio. It gets the uniform, label-swap and positional nulls, the
bootstrap, FDR and held-out replication of every content detector, and a relative rule (lift).

    [[hypothesis]]
    name = "s_reads_word_start"
    description = "an s reads the first letter of its word"
    query_chars = "s"
    key_regex = "\\\\b\\\\w"          # keys where a word starts
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from .classes import CLASS_NAMES
from .detectors import SKIP
from .errors import ReportgenError

NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
QUERY_KEYS = ("query_chars", "query_class", "query_regex")
KEY_KEYS = ("key_chars", "key_class", "key_regex", "key_offset")


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
            for m in re.finditer(regex, text):
                if m.start() < T:
                    out[m.start()] = True
            return out
        return None

    @property
    def has_query(self) -> bool:
        return any(v is not None for v in (self.query_chars, self.query_class, self.query_regex))

    @staticmethod
    def _text(ids: torch.Tensor, vocab: list[str]) -> str:
        """One window's characters (multi-character symbols such as <PAD> as NUL, so regexes never match them)."""
        return "".join(vocab[int(x)] if len(vocab[int(x)]) == 1 else "\0" for x in ids)

    def query_positions(self, ids: torch.Tensor, codes: torch.Tensor, vocab: list[str]) -> torch.Tensor:
        """Bool (B, T): the positions this hypothesis is about (every position if it names no queries); also its
        targeted-ablation contrast (predicting the character after them)."""
        rows = []
        for b in range(ids.shape[0]):
            text = self._text(ids[b], vocab)
            q = self._positions(self.query_chars, self.query_class, self.query_regex, text, codes[b])
            rows.append(torch.ones(ids.shape[1], dtype=torch.bool) if q is None else q)
        return torch.stack(rows)

    def mask(self, ids: torch.Tensor, codes: torch.Tensor, vocab: list[str]) -> torch.Tensor:
        """Target mask (B, T, S): query i is one the hypothesis is about and key j <= i one it should read."""
        B, T = ids.shape
        i, j = torch.arange(T).view(T, 1), torch.arange(T).view(1, T)
        queries = self.query_positions(ids, codes, vocab)  # (B, T)
        if self.key_offset is not None:
            keys = (j == i - self.key_offset).expand(B, T, T)
        else:
            keys = torch.stack([self._positions(self.key_chars, self.key_class, self.key_regex,
                                                self._text(ids[b], vocab), codes[b]) for b in range(B)])
            keys = keys.view(B, 1, T) & (j <= i)
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
                    re.compile(v)
                except re.error as exc:
                    raise ReportgenError(f"{where} ({name}): bad regex {v!r} ({exc})") from None
        description = e.get("description", "")
        if not isinstance(description, str):
            raise ReportgenError(f"{where} ({name}): description must be a string")
        out.append(Hypothesis(name, description or name.replace("_", " "),
                              **{k: e[k] for k in queries + keys}))
    return tuple(out)


def check_targets(hyps: tuple[Hypothesis, ...], ids: torch.Tensor, codes: torch.Tensor, vocab: list[str],
                  source: str) -> None:
    """Each hypothesis must have targets in the text (an empty target set is a mistake, not a null result)."""
    for h in hyps:
        if not h.mask(ids, codes, vocab)[:, SKIP:].any():
            raise ReportgenError(f"{source}: hypothesis {h.name!r} has no query-key pair in the text; check its "
                                 f"characters, class or regex")


def _query_mean(x: torch.Tensor) -> torch.Tensor:
    return x[..., SKIP:].mean(-1)


def scores(hyps, attn: torch.Tensor, ids: torch.Tensor, codes: torch.Tensor, vocab: list[str],
           partner_labels: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[dict, dict, dict]:
    """Observed, chance and label-swap values (B, L, H) of every hypothesis on one batch; the swap null scores
    each window against its partner's (ids, codes), NaN without a partner."""
    B, L, H, T, S = attn.shape
    obs, chance, swap = {}, {}, {}
    uniform = 1.0 / torch.arange(1, T + 1, dtype=torch.float32)
    for h in hyps:
        m = h.mask(ids, codes, vocab).to(attn.dtype)  # (B, T, S)
        obs[h.detector] = _query_mean((attn * m.view(B, 1, 1, T, S)).sum(-1))
        chance[h.detector] = _query_mean(m.sum(-1) * uniform).view(B, 1, 1).expand(B, L, H)
        if partner_labels is None:
            swap[h.detector] = torch.full_like(obs[h.detector], float("nan"))
        else:
            mr = h.mask(*partner_labels, vocab).to(attn.dtype)
            swap[h.detector] = _query_mean((attn * mr.view(B, 1, 1, T, S)).sum(-1))
    return obs, chance, swap


def positional(hyps, mean_attn: torch.Tensor, ids: torch.Tensor, codes: torch.Tensor, vocab: list[str]) -> dict:
    """Each hypothesis under the head's mean attention pattern (renormalised rows): (W, L, H)."""
    rows = mean_attn / mean_attn.sum(-1, keepdim=True).clamp_min(1e-12)
    return {h.detector: _query_mean(torch.einsum("lhis,wis->wlhi", rows, h.mask(ids, codes, vocab).float()))
            for h in hyps}
