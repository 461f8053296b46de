"""The model card: architecture, parameter count, training and vocabulary of one model, computed from the loaded
model and what its checkpoint records (never typed). Shown on each model page and in the PDF's model chapter."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .codec import optional
from .languages import script

NOT_RECORDED = "not recorded"


@dataclass(frozen=True)
class ModelCard:
    """What a reader of the report needs to know about the model itself."""

    n_layers: int
    n_heads: int
    embed_size: int
    context: int  # characters the model reads at once
    mlp_hidden_size: int
    residuals: bool
    residuals_how: str  # how the residual setting was decided (recorded, given, inferred and the fit)
    parameters: int  # trainable parameters of the loaded model (shared tensors counted once)
    vocab_size: int  # symbols, <PAD> included
    script: str  # the letters' script(s), and whether they have case
    steps: int | None = optional()  # training steps, where the checkpoint records them
    batch_size: int | None = optional()  # sequences per step, where recorded
    sequences: int | None = optional()  # steps x batch size
    training: str = NOT_RECORDED  # the training count as a sentence ("5,000 steps x 32 sequences = ...")


def residuals_how(metadata: dict, given: bool | None) -> str:
    """How the residual setting was decided, from the checkpoint's metadata (`loader.check_fit` records an
    inference) and the setting the user gave (None: none)."""
    fmt = metadata.get("format")
    inferred = metadata.get("with_residuals_inferred")
    if fmt == "reportgen":
        return "recorded in the checkpoint"
    if fmt == "nanogpt":
        return "nanoGPT's architecture (always residual; recorded model_args)"
    if "with_residuals" in metadata.get("recorded", ()):
        return "recorded in the checkpoint's props file"
    if given is not None:
        return "given on the command line (--residuals / --no-residuals)"
    if isinstance(inferred, dict):
        return (f"inferred: this setting fits the text better ({inferred['bits_per_char']:.3f} vs "
                f"{inferred['other_setting_bits_per_char']:.3f} bits/char with the other)")
    return "assumed (not recorded, not inferred)"


def script_of(vocab: list[str]) -> str:
    """The vocabulary's letters by script, most letters first, and whether they have case: 'Latin (upper and lower
    case)', 'Hebrew (no case)', 'Latin (lower case only)'."""
    letters = [c for c in vocab if len(c) == 1 and c.isalpha()]
    if not letters:
        return "no letters"
    counts = Counter(script(c).title() for c in letters)
    names = ", ".join(name for name, _ in counts.most_common())
    cased = [c for c in letters if c.lower() != c.upper()]
    case = ("no case" if not cased else "upper and lower case" if any(c.isupper() for c in cased) and
            any(c.islower() for c in cased) else "lower case only" if any(c.islower() for c in cased)
            else "upper case only")
    return f"{names} ({case})"


def model_card(model, vocab: list[str], metadata: dict, given_residuals: bool | None) -> ModelCard:
    """The card of a loaded `TransformerLM` with its vocabulary and checkpoint metadata."""
    cfg = model.config
    parameters = sum(p.numel() for p in model.parameters())  # parameters() yields a shared tensor once
    steps, batch = metadata.get("step"), metadata.get("batch_size")
    steps = int(steps) if isinstance(steps, (int, float)) and not isinstance(steps, bool) else None
    sequences = steps * batch if steps is not None and batch else None
    if sequences is not None:
        training = f"{steps:,} step{'' if steps == 1 else 's'} × {batch:,} sequences of {cfg.max_context_len} characters = {sequences:,} sequences"
    elif steps is not None:
        training = f"{steps:,} step{'' if steps == 1 else 's'}; sequences per step {NOT_RECORDED}"
    else:
        training = NOT_RECORDED
    return ModelCard(cfg.n_layers, cfg.n_heads, cfg.embed_size, cfg.max_context_len, cfg.mlp_hidden_size,
                     bool(cfg.with_residuals), residuals_how(metadata, given_residuals), int(parameters),
                     len(vocab), script_of(vocab), steps, batch, sequences, training)
