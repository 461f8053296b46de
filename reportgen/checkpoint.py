"""Load and save checkpoints safely: reportgen's own format and the course layout.

Nothing is ever unpickled beyond tensors and plain containers (`torch.load(weights_only=True)`).

* reportgen format: one file holding {"format": "reportgen-checkpoint", "version", "config",
  "vocab", "model_state_dict", "step", "train_loss", "heldout_bits_per_char", "corpus",
  "seed", "history"}.
* nanoGPT: `ckpt.pt` with `model`, `model_args`, `config` and `meta.pkl` beside it (see nanogpt.py).
* course layout: `checkpoint_step{S}_loss{L}.pt` with `model_state_dict` (optionally
  `optimizer_state_dict`, `step`, `loss`), `tokenizer.json` beside it, and optionally
  `checkpoint_step{S}_props.json` with hyperparameters. Missing hyperparameters are inferred
  from tensor shapes; `with_residuals` cannot be and comes from the caller (default True).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from . import nanogpt
from .config import file_sha256
from .device import CPU, place
from .errors import ReportgenError
from .layouts import COURSE_NAME, beside_or_above, props_file, resolve, step_of
from .model import ModelConfig, TransformerLM
from .tokenizer import CharTokenizer, read_json

FORMAT = "reportgen-checkpoint"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelBundle:
    """A loaded model in eval mode with its vocabulary, metadata and file hash."""

    model: TransformerLM
    tokenizer: CharTokenizer
    path: Path
    sha256: str
    language: str | None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> ModelConfig:
        """The model's hyperparameters."""
        return self.model.config


def _safe_load(path: Path) -> Any:
    """torch.load with weights_only=True; every failure becomes a one-line ReportgenError."""
    if not path.exists():
        raise ReportgenError(f"{path}: checkpoint not found")
    if not path.is_file():
        raise ReportgenError(f"{path}: not a file")
    _check_archive(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad files; all mean "not loadable"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if "Weights only load failed" in str(exc) or "Unsupported global" in str(exc):
            reason = "refused: it holds arbitrary Python objects, which are never unpickled"
        elif "zip archive" in str(exc) or "central directory" in str(exc) or isinstance(exc, EOFError):
            reason = f"truncated or not a PyTorch checkpoint ({first[:120]})"
        else:
            reason = f"not a loadable PyTorch checkpoint ({first[:120]})"
        raise ReportgenError(f"{path}: {reason}") from None
    _check_structure(payload, path)
    return payload


MAX_ARCHIVE_BYTES = 4 * 2 ** 30  # the members of a checkpoint archive, uncompressed (a character model: a few MB)
MAX_PICKLE_BYTES = 64 * 2 ** 20  # its pickle (the structure and metadata; tensors live in other members)
MAX_RATIO = 200  # uncompressed / compressed size of any large member (float weights barely compress)
MAX_NODES = 200_000  # containers and values met walking a checkpoint's structure (shared ones each time)
MAX_DEPTH = 64
MAX_CONTEXT = 16_384  # positions: the causal mask alone is context² floats


def _check_archive(path: Path) -> None:
    """Before unpickling: a zip checkpoint's declared member sizes and compression ratios are sane (a small
    file must not inflate to gigabytes)."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return  # the legacy format: read as it is stored
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ReportgenError(f"{path}: truncated or not a PyTorch checkpoint ({exc})") from None
    total = sum(m.file_size for m in members)
    if total > MAX_ARCHIVE_BYTES:
        raise ReportgenError(f"{path}: refused: its archive declares {total / 2 ** 30:.1f} GiB uncompressed, more than "
                             f"{MAX_ARCHIVE_BYTES / 2 ** 30:.0f} GiB")
    for m in members:
        if m.filename.endswith(".pkl") and m.file_size > MAX_PICKLE_BYTES:
            raise ReportgenError(f"{path}: refused: its pickle ({m.filename}) declares {m.file_size / 2 ** 20:.0f} MiB, "
                                 f"more than a checkpoint's structure needs")
        if m.file_size > 2 ** 20 and m.file_size > MAX_RATIO * max(1, m.compress_size):
            raise ReportgenError(f"{path}: refused: member {m.filename} inflates {m.file_size / max(1, m.compress_size):.0f}"
                                 f"-fold ({m.compress_size} -> {m.file_size} bytes); not a checkpoint's weights")


def _check_structure(payload: Any, path: Path) -> None:
    """After unpickling (plain data only): the structure is not absurdly deep or large (shared containers count
    each time they are met, so a 'billion laughs' nesting is refused before anything walks it), and every
    tensor's storage holds its shape without zero or negative strides."""
    budget = [MAX_NODES]
    stack: list[tuple[Any, int]] = [(payload, 0)]
    while stack:
        x, depth = stack.pop()
        budget[0] -= 1
        if budget[0] < 0 or depth > MAX_DEPTH:
            what = f"deeper than {MAX_DEPTH} levels" if depth > MAX_DEPTH else f"more than {MAX_NODES:,} values"
            raise ReportgenError(f"{path}: refused: its metadata nests {what}; not a checkpoint")
        if isinstance(x, torch.Tensor):
            _check_tensor(x, path)
        elif isinstance(x, dict):
            stack.extend((v, depth + 1) for v in x.values())
            stack.extend((k, depth + 1) for k in x.keys() if not isinstance(k, (str, int)))
        elif isinstance(x, (list, tuple, set, frozenset)):
            stack.extend((v, depth + 1) for v in x)


def _check_tensor(t: torch.Tensor, path: Path) -> None:
    """A tensor whose strides fit its storage: no zero or negative stride along a dimension of size > 1, and
    the storage holds every element the shape and strides address."""
    if t.numel() == 0:
        return
    if any(st <= 0 and n > 1 for st, n in zip(t.stride(), t.shape)):
        raise ReportgenError(f"{path}: refused: a tensor of shape {tuple(t.shape)} has strides {t.stride()}: "
                             f"it repeats one stored value instead of holding its elements")
    last = t.storage_offset() + sum((n - 1) * st for n, st in zip(t.shape, t.stride()))
    if (last + 1) * t.element_size() > t.untyped_storage().nbytes():
        raise ReportgenError(f"{path}: refused: a tensor of shape {tuple(t.shape)} reaches past its storage")


def _check_vocab(vocab: list[str], path: Path) -> None:
    """A vocabulary lists each symbol once (a repeat would silently feed one character as another)."""
    seen: set[str] = set()
    for symbol in vocab:
        if symbol in seen:
            raise ReportgenError(f"{path}: vocabulary lists {symbol!r} more than once")
        seen.add(symbol)


def _strip_prefix(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Drop a torch.compile `_orig_mod.` prefix; keep tensors only."""
    return {k.removeprefix("_orig_mod."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def infer_config(state: dict[str, torch.Tensor], path: Path, with_residuals: bool = True,
                 known: dict[str, Any] | None = None) -> ModelConfig:
    """Hyperparameters from tensor shapes, overridden by `known` values (e.g. a props JSON)."""
    try:
        vocab_size, embed_size = state["embed.token_embeddings.weight"].shape
        max_context_len = state["embed.position_embeddings.weight"].shape[0]
        n_layers = len({k.split(".")[1] for k in state if k.startswith("layers.")})
        n_heads = len({k.split(".")[4] for k in state if k.startswith("layers.0.causal_attention.kqv_matrices.")})
        mlp_hidden_size = state["layers.0.mlp.i2h.weight"].shape[0]
    except KeyError as exc:
        raise ReportgenError(f"{path}: not a TransformerLM state dict (missing {exc.args[0]})") from None
    if max_context_len > MAX_CONTEXT:
        raise ReportgenError(f"{path}: context of {max_context_len} positions is more than reportgen reads "
                             f"({MAX_CONTEXT}); a character model's attention over it would not fit in memory")
    values = dict(n_layers=n_layers, n_heads=n_heads, embed_size=int(embed_size),
                  max_context_len=int(max_context_len), vocab_size=int(vocab_size),
                  mlp_hidden_size=int(mlp_hidden_size), with_residuals=with_residuals)
    if known is not None and not isinstance(known, dict):
        raise ReportgenError(f"{path}: recorded hyperparameters are a {type(known).__name__}, not a table")
    names = {f.name for f in fields(ModelConfig)}
    known = {k: v for k, v in (known or {}).items() if k in names}
    for key, value in known.items():  # checked against the weights before anything is built
        if key in ("dropout",):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1
        elif key == "init_method":
            ok = isinstance(value, str)
        elif key == "with_residuals":
            ok = isinstance(value, bool)
        else:
            ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
        if not ok:
            raise ReportgenError(f"{path}: recorded hyperparameter {key} = {value!r} is not valid")
        if key in values and key != "with_residuals" and value != values[key]:
            raise ReportgenError(f"{path}: recorded {key} = {value} but the weights have {values[key]}")
    values.update(known)
    if values["embed_size"] % values["n_heads"]:
        raise ReportgenError(f"{path}: embed_size {values['embed_size']} is not divisible by n_heads {values['n_heads']}")
    try:
        return ModelConfig(**values)
    except (TypeError, ValueError) as exc:
        raise ReportgenError(f"{path}: bad hyperparameters ({exc})") from None


def build_model(config: ModelConfig, state: dict[str, torch.Tensor], path: Path) -> TransformerLM:
    """Instantiate the model and load `state` strictly (a missing causal mask is filled in)."""
    model = TransformerLM.from_config(config)
    own = model.state_dict()
    state = dict(state)
    for key, value in own.items():
        if key.endswith("causal_attention.mask") and key not in state:
            state[key] = value
    state = {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise ReportgenError(f"{path}: weights do not fit the model ({detail[:300]})") from None
    return model.eval()


def save_checkpoint(path: Path, model: TransformerLM, tokenizer: CharTokenizer, *, step: int,
                    train_loss: float, heldout_bits_per_char: float, corpus: dict[str, Any],
                    seed: int, history: list[list[float]], dtype: torch.dtype = torch.float16,
                    batch_size: int | None = None) -> None:
    """Write a self-contained reportgen checkpoint (weights in `dtype`, mask buffers omitted)."""
    state = {k: v.detach().to("cpu", dtype) for k, v in model.state_dict().items() if not k.endswith(".mask")}
    payload = {
        "format": FORMAT, "version": FORMAT_VERSION, "config": model.config.to_dict(),
        "vocab": tokenizer.vocab, "model_state_dict": state, "step": int(step),
        "train_loss": float(train_loss), "heldout_bits_per_char": float(heldout_bits_per_char),
        "corpus": corpus, "seed": int(seed), "history": history,
        **({"batch_size": int(batch_size)} if batch_size else {}),  # sequences per step (the model card's count)
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.unlink(missing_ok=True)  # a link left there would be written through
    torch.save(payload, tmp)
    tmp.replace(path)  # replaces a file or a symbolic link at `path` itself, never a link's target


def _course_tokenizer(ckpt: Path, train_text: str | Path | None, vocab_size: int) -> CharTokenizer:
    """tokenizer.json beside the checkpoint (or above its step folder), else the vocabulary rebuilt from the training
    text."""
    tok_path = ckpt.parent / "tokenizer.json"
    tok_path = tok_path if tok_path.exists() else beside_or_above(ckpt, "tokenizer.json") or tok_path
    if tok_path.exists():
        tok = CharTokenizer.load(tok_path)
        source = tok_path
    elif train_text is not None:
        from .corpora import read_text

        tok = CharTokenizer.from_text([read_text(train_text)])
        source = Path(train_text)
    else:
        raise ReportgenError(f"{ckpt}: no tokenizer.json beside it; pass --train-text to rebuild the vocabulary")
    if tok.vocab_size() != vocab_size:
        raise ReportgenError(
            f"{source}: vocabulary has {tok.vocab_size()} symbols but the checkpoint {ckpt.name} expects {vocab_size}")
    return tok


def _batch(size: Any, accumulate: Any = 1) -> dict[str, int]:
    """{"batch_size": sequences per training step} when a checkpoint records a whole positive batch size (times
    nanoGPT's gradient accumulation steps), else nothing."""
    size, accumulate = _number(size), _number(accumulate)
    ok = lambda n: isinstance(n, int) and n > 0
    return {"batch_size": size * accumulate} if ok(size) and ok(accumulate) else {}


def _number(x: Any) -> float | int | None:
    """A plain number from checkpoint metadata (nanoGPT stores some as 0-d tensors)."""
    if isinstance(x, torch.Tensor) and x.numel() == 1:
        x = x.item()
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def load_checkpoint(path: str | Path, *, with_residuals: bool = True, train_text: str | Path | None = None,
                    language: str | None = None, meta_path: Path | None = None,
                    device: torch.device | None = None) -> ModelBundle:
    """Load a reportgen, course or nanoGPT checkpoint (file or folder) into a ModelBundle on `device`
    (default the CPU; see device.place: inputs and outputs stay CPU tensors either way)."""
    path = resolve(Path(path))
    payload = _safe_load(path)
    if not isinstance(payload, dict):
        raise ReportgenError(f"{path}: not a checkpoint (holds a {type(payload).__name__}, expected a dict)")
    if payload.get("format") == FORMAT:
        if payload.get("version") != FORMAT_VERSION:
            raise ReportgenError(f"{path}: checkpoint format version {payload.get('version')} is not supported")
        if not isinstance(payload.get("model_state_dict"), dict):
            raise ReportgenError(f"{path}: checkpoint has no model_state_dict")
        state = _strip_prefix(payload["model_state_dict"])
        config = infer_config(state, path, known=payload.get("config"))
        vocab = payload.get("vocab")
        if not isinstance(vocab, list) or not all(isinstance(c, str) for c in vocab):
            raise ReportgenError(f"{path}: checkpoint has no vocabulary (a list of symbols under 'vocab')")
        tokenizer = CharTokenizer(vocab)
        if tokenizer.vocab_size() != config.vocab_size:
            raise ReportgenError(f"{path}: vocabulary size {tokenizer.vocab_size()} != model's {config.vocab_size}")
        meta = {k: payload.get(k) for k in ("step", "train_loss", "heldout_bits_per_char", "corpus", "seed", "history")}
        meta["format"] = "reportgen"
        meta.update(_batch(payload.get("batch_size")))
        language = language or (payload.get("corpus") or {}).get("language")
    elif nanogpt.is_nanogpt(payload):
        known, state = nanogpt.convert(payload, path)
        config = infer_config(state, path, known=known)
        tokenizer = CharTokenizer(nanogpt.vocabulary(nanogpt.read_meta(nanogpt.find_meta(path, payload, meta_path)),
                                                     config.vocab_size, path))
        meta = {"format": "nanogpt", "step": _number(payload.get("iter_num")),
                "best_val_loss": _number(payload.get("best_val_loss"))}
        run = payload.get("config") if isinstance(payload.get("config"), dict) else {}  # sequences per iteration:
        meta.update(_batch(run.get("batch_size"), run.get("gradient_accumulation_steps", 1)))  # nanoGPT's train.py
    elif "model_state_dict" in payload or all(isinstance(v, torch.Tensor) for v in payload.values()):
        raw = payload.get("model_state_dict", payload)
        if not isinstance(raw, dict):
            raise ReportgenError(f"{path}: model_state_dict is not a dict")
        state = _strip_prefix(raw)
        known: dict[str, Any] = {}
        match = COURSE_NAME.search(path.name)
        props = props_file(path)
        if props is not None and props.exists():
            known = read_json(props, "props")
        config = infer_config(state, path, with_residuals=with_residuals, known=known)
        tokenizer = _course_tokenizer(path, train_text, config.vocab_size)
        meta = {"format": "course", "step": _number(payload.get("step", step_of(path))),
                "train_loss": _number(payload.get("loss", float(match["loss"]) if match else None)),
                "hyperparameters_inferred": sorted(set(config.to_dict()) - set(known)),
                "recorded": sorted(k for k in known if k in {f.name for f in fields(ModelConfig)}),
                **_batch(known.get("batch_size") if isinstance(known, dict) else None)}
    else:
        raise ReportgenError(f"{path}: not a TransformerLM checkpoint (keys: {', '.join(map(str, list(payload)[:6]))})")
    _check_vocab(tokenizer.vocab, path)
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise ReportgenError(f"{path}: weights contain NaN or infinite values ({bad})")
    model = place(build_model(config, state, path), device or CPU)
    return ModelBundle(model=model, tokenizer=tokenizer, path=path, sha256=file_sha256(path),
                       language=language, metadata=meta)
