"""One loader for every entry point: run, analyze, diff, export, info and the Python API.

Loading has two steps, because one architecture flag cannot be read from a course checkpoint:

* `open_checkpoint`: the weights, hyperparameters (recorded, else inferred from tensor shapes), vocabulary and
  context (`checkpoint.load_checkpoint`), and the checks that the options fit the checkpoint's kind
  (`--residuals`/`--no-residuals` and `--train-text` are for course checkpoints only).
* `check_fit`: on token ids of the model's kind of text, a course checkpoint whose residual setting is neither
  recorded (props JSON) nor given is evaluated both ways and the better fit is kept and said; a loss far worse
  than the checkpoint records, or no better than uniform guessing, stops with the likely cause.

`load` does both for callers that hold no prepared text (export, info, `api.load`): the text is the held-out
part of a text file (as `run --text` holds it out), a string, or the default corpus of the model's language, so
the run and every other entry point build the same model from the same checkpoint and text. Without any text
an undecided course checkpoint is a one-line error, never a silent guess.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .checkpoint import ModelBundle, build_model, load_checkpoint
from .device import device_of, place
from .errors import ReportgenError
from .languages import LANGUAGE
from .progress import say


def open_checkpoint(path: str | Path, *, with_residuals: bool | None = None, train_text: str | Path | None = None,
                    language: str | None = None, meta: str | Path | None = None,
                    device: torch.device | None = None) -> ModelBundle:
    """Load a checkpoint (file or folder) on `device`; `with_residuals` None means recorded or still to be inferred
    (`undecided`, `check_fit`). Options that do not apply to the checkpoint's kind are one-line errors."""
    bundle = load_checkpoint(path, with_residuals=with_residuals is not False, train_text=train_text,
                             language=language, meta_path=Path(meta) if meta else None, device=device)
    if language is not None:
        check_language(language, path)
        check_script(bundle, language)
    fmt = bundle.metadata.get("format")
    if fmt != "course" and with_residuals is not None:
        raise ReportgenError(f"{path}: --no-residuals/--residuals apply to course checkpoints; this {fmt} "
                             f"checkpoint records its own architecture")
    if fmt != "course" and train_text is not None:
        raise ReportgenError(f"{path}: --train-text rebuilds a course checkpoint's vocabulary; this {fmt} "
                             f"checkpoint has its own")
    return bundle


def check_language(language, where) -> None:
    """A language is `en`, `he` or another ISO 639 code (the same rule in every entry point)."""
    from .languages import CODE, LANGUAGE_CODES

    if not isinstance(language, str) or (language not in LANGUAGE_CODES and not CODE.fullmatch(language)):
        raise ReportgenError(f"{where}: language must be a language code such as {', '.join(LANGUAGE_CODES)}, "
                             f"not {language!r}")


def check_script(bundle: ModelBundle, language: str | None) -> None:
    """Refuse a language whose letters the model's vocabulary does not have (e.g. Hebrew for an English model)."""
    lang = LANGUAGE.get(language) if language else None
    if lang is None:
        return
    symbols = [c for c in bundle.tokenizer.vocab if len(c) == 1 and c.isalpha()]
    own = sum(lang.letters(c) for c in symbols)
    if symbols and own == 0:
        others = [other.name for other in LANGUAGE.values() if any(other.letters(c) for c in symbols)]
        hint = f" (its letters are {' and '.join(others)})" if others else ""
        raise ReportgenError(f"{bundle.path}: language {lang.name} was given but the vocabulary has no {lang.name} "
                             f"letters{hint}; give the model's own language")


def undecided(bundle: ModelBundle, with_residuals: bool | None) -> bool:
    """Whether the residual setting is neither recorded by the checkpoint nor given: course checkpoints only."""
    meta = bundle.metadata
    return meta.get("format") == "course" and with_residuals is None and \
        "with_residuals" not in meta.get("recorded", ())


@torch.no_grad()
def bits(model, ids: np.ndarray, n_windows: int = 8) -> float:
    """Bits/char of `model` on up to `n_windows` evenly spread windows of `ids` (context + 1 characters each); a text
    shorter than one such window is read as one shorter window."""
    from .ablation import nll_bits

    T = model.config.max_context_len
    n = (len(ids) - 1) // (T + 1)
    if n == 0:
        return float(nll_bits(model, torch.as_tensor(np.asarray(ids)[None, :])).mean())
    starts = np.linspace(0, n - 1, min(n, n_windows)).round().astype(int) * (T + 1)
    return float(nll_bits(model, torch.as_tensor(np.stack([ids[s:s + T + 1] for s in starts]))).mean())


def check_fit(bundle: ModelBundle, with_residuals: bool | None, ids: np.ndarray, source: str) -> ModelBundle:
    """Catch wrong architecture flags: a course checkpoint whose residual setting is neither recorded nor given
    (`undecided`) is evaluated both ways on the text `ids` and the better fit is kept (and said); a loss far worse
    than the checkpoint records, or no better than uniform guessing, stops naming the likely cause."""
    if len(ids) < 2:
        raise ReportgenError(f"{source}: {len(ids)} character(s) are too few to measure how the model fits its text")
    meta = dict(bundle.metadata)
    measured = bits(bundle.model, ids)
    if undecided(bundle, with_residuals):
        other_cfg = replace(bundle.config, with_residuals=not bundle.config.with_residuals)
        other = place(build_model(other_cfg, bundle.model.state_dict(), bundle.path), device_of(bundle.model))
        alternative = bits(other, ids)
        if alternative < measured:
            bundle, measured, alternative = replace(bundle, model=other), alternative, measured
        meta["with_residuals_inferred"] = {"chosen": bundle.config.with_residuals, "bits_per_char": measured,
                                           "other_setting_bits_per_char": alternative}
        say(f"{bundle.path}: {'with' if bundle.config.with_residuals else 'without'} residual connections fits the "
            f"text better ({measured:.2f} vs {alternative:.2f} bits/char); using it (set --residuals or "
            f"--no-residuals to choose)")
    uniform = math.log2(max(2, bundle.tokenizer.vocab_size()))
    recorded = meta.get("heldout_bits_per_char")
    for key in ("train_loss", "best_val_loss"):  # nats per character in course and nanoGPT checkpoints
        if recorded is None and isinstance(meta.get(key), (int, float)):
            recorded = meta[key] / math.log(2)
    meta["measured_bits_per_char"] = measured
    cause = ("wrong architecture flags (--no-residuals / --residuals) or a vocabulary that does not belong to "
             "this checkpoint")
    if meta.get("format") == "course" and recorded is not None and measured >= uniform - 0.05 and \
            recorded < 0.8 * uniform:  # course checkpoints do not record their residual setting
        raise ReportgenError(f"{bundle.path}: measured {measured:.2f} bits/char on {source}, no better than "
                             f"uniform guessing ({uniform:.2f}), though the checkpoint records {recorded:.2f}; "
                             f"likely {cause}")
    if recorded is not None and measured > 1.5 * recorded + 0.5:
        say(f"warning: {bundle.path}: measured {measured:.2f} bits/char on {source} but the checkpoint records "
            f"{recorded:.2f}; if this is the model's own kind of text, suspect {cause}")
    return replace(bundle, metadata=meta)


def sample_text(bundle: ModelBundle, text: str | Path | None, heldout: str | Path | None,
                language: str | None) -> tuple[str, str] | None:
    """(text, where it came from) to measure the fit on, as the run chooses it: the held-out part of a text file or
    folder (`heldout` if given, else its last 10 % cut at a line, `corpora.text_split`), a string as it is, or the
    held-out books of the language's default corpus; None when there is none of these."""
    from .corpora import bible_split, text_split
    
    if isinstance(text, Path):
        return text_split(text, language or "en", heldout).heldout, str(heldout or text)
    if isinstance(text, str):
        return text, "the given text"
    if text is not None:
        raise ReportgenError(f"the text to check a model on is a string or a Path, not {type(text).__name__}")
    lang = language or bundle.language
    if lang in LANGUAGE and LANGUAGE[lang].corpus_loader:
        split = bible_split(lang)
        return split.heldout, f"{split.name} (held-out books)"
    return None


def load(path: str | Path, *, text: str | Path | None = None, heldout: str | Path | None = None,
         with_residuals: bool | None = None, train_text: str | Path | None = None, language: str | None = None,
         meta: str | Path | None = None, device: torch.device | None = None, oov: str = "error",
         decide: bool = True) -> ModelBundle:
    """`open_checkpoint`, then, for a course checkpoint, `check_fit` on the model's kind of text (`sample_text`)
    when there is one: the residual setting inferred where it is not recorded or given, a given one checked. An
    undecided course checkpoint without any text is a one-line error, or with `decide=False` (for `info`) comes
    back built with residual connections and marked `metadata["with_residuals_inferred"] = None`. Checkpoints that
    record their architecture (reportgen, nanoGPT) are returned as loaded: their fit is judged by the run, on its
    whole text, not on a few passages."""
    from .capture import encode

    bundle = open_checkpoint(path, with_residuals=with_residuals, train_text=train_text, language=language,
                             meta=meta, device=device)
    if bundle.metadata.get("format") != "course":  # its architecture is recorded: nothing to infer or to doubt
        return bundle
    sample = sample_text(bundle, text, heldout, language)
    if sample is None:
        if not undecided(bundle, with_residuals):
            return bundle
        if not decide:
            return replace(bundle, metadata={**bundle.metadata, "with_residuals_inferred": None})
        raise ReportgenError(f"{path}: a course checkpoint does not record whether it was trained with residual "
                             f"connections; give a sample of its text (--text FILE, or text= in Python) to infer "
                             f"it, or say --residuals / --no-residuals (with_residuals=True/False)")
    chars, source = sample
    return check_fit(bundle, with_residuals, encode(bundle, chars, source, oov), source)
