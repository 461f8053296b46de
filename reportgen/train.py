"""`reportgen train`: train a course-shaped TransformerLM on a corpus, deterministically for a seed."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .checkpoint import save_checkpoint
from .corpora import TextSplit
from .device import device_of, resolve
from .errors import ReportgenError
from .model import ModelConfig, TransformerLM
from .progress import make_progress
from .tokenizer import CharTokenizer

LN2 = math.log(2.0)
STEP_FILE = re.compile(r"^step\d{5,}\.pt$")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (a typical course model by default)."""

    steps: int = 6000
    batch_size: int = 32
    lr: float = 2e-3
    warmup: int = 200
    weight_decay: float = 0.01
    seed: int = 0
    save_at: tuple[int, ...] = ()
    save_every: int = 0  # also checkpoint every this many steps (0: only save_at and the last step)
    eval_every: int = 250
    eval_windows: int = 96
    n_layers: int = 4
    n_heads: int = 4
    embed_size: int = 128
    max_context_len: int = 128
    mlp_hidden_size: int = 512
    with_residuals: bool = True
    threads: int | None = None
    device: str = "auto"  # auto: cuda when torch sees a GPU, else cpu (batches are drawn on the CPU either way)
    out: Path = field(default_factory=lambda: Path("checkpoints"))
    force: bool = False  # overwrite checkpoints already in `out` (each is replaced, a symlink itself, never its target)

    def __post_init__(self) -> None:
        """Numbers that would train nothing, or fail minutes in, are refused here in one line."""
        flags = {"steps": "--steps", "batch_size": "--batch-size", "eval_every": "eval_every",
                 "eval_windows": "eval_windows", "n_layers": "--layers", "n_heads": "--heads", "embed_size": "--embed",
                 "mlp_hidden_size": "--mlp"}
        for name, flag in flags.items():
            if getattr(self, name) < 1:
                raise ReportgenError(f"train: {flag} must be at least 1, not {getattr(self, name)}")
        if self.max_context_len < 2:
            raise ReportgenError(f"train: --context must be at least 2, not {self.max_context_len}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ReportgenError(f"train: --lr must be a positive number, not {self.lr}")
        if self.warmup < 0 or self.weight_decay < 0:
            raise ReportgenError("train: warmup and weight decay cannot be negative")
        if self.embed_size % self.n_heads:
            raise ReportgenError(f"train: --embed {self.embed_size} is not divisible by --heads {self.n_heads}")
        if self.threads is not None and self.threads < 1:
            raise ReportgenError(f"train: --threads must be at least 1, not {self.threads}")
        if self.save_every < 0:
            raise ReportgenError(f"train: --save-every must be at least 1 (or 0: off), not {self.save_every}")
        if any(s < 1 or s > self.steps for s in self.save_at):
            raise ReportgenError(f"train: --save-at steps must lie in 1..{self.steps} (--steps), not "
                                 f"{','.join(map(str, self.save_at))}")


def check_out(cfg: TrainConfig) -> None:
    """Refuse, before any work, an --out that is not a folder, or one holding checkpoints (stepNNNNN.pt) unless
    cfg.force: a new run would overwrite them or mix its series with theirs."""
    out = cfg.out
    if (out.is_symlink() and not out.exists()) or (out.exists() and not out.is_dir()):
        what = "a file" if out.exists() else "a dangling symbolic link"
        raise ReportgenError(f"{out}: --out must be a folder, and this is {what}")
    held = sorted(p.name for p in out.iterdir() if STEP_FILE.match(p.name)) if out.is_dir() else []
    if held and not cfg.force:
        names = ", ".join(held[:6]) + (f" and {len(held) - 6} more" if len(held) > 6 else "")
        raise ReportgenError(f"{out}: already holds checkpoints {names}; pass --force to overwrite them, or choose "
                             f"another --out")


def evenly_spaced_windows(ids: torch.Tensor, length: int, count: int | None = None) -> torch.Tensor:
    """Non-overlapping windows (W, length) from a 1-D id tensor; `count` of them evenly spread, or all."""
    n = (ids.numel()) // length
    if n == 0:
        raise ValueError(f"text of {ids.numel()} characters is shorter than one window of {length}")
    starts = torch.arange(n) * length
    if count is not None and count < n:
        starts = starts[torch.linspace(0, n - 1, count).round().long()]
    return torch.stack([ids[s:s + length] for s in starts.tolist()])  # (W, length)


@torch.no_grad()
def bits_per_char(model: TransformerLM, windows: torch.Tensor, batch_size: int = 64) -> float:
    """Mean next-character loss in bits over windows (W, ctx + 1)."""
    model.eval()
    total, count = 0.0, 0
    for batch in windows.split(batch_size):
        batch = batch.to(device_of(model))
        logits = model(batch[:, :-1])  # (B, ctx, vocab)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum")
        total += loss.item()
        count += batch[:, 1:].numel()
    return total / count / LN2


def _lr(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up then cosine decay to 10 % of the peak rate."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress))))


def train(split: TextSplit, cfg: TrainConfig) -> list[Path]:
    """Train on split.train, evaluate on split.heldout, save checkpoints at cfg.save_at, every cfg.save_every steps
    and at the end."""
    check_out(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    tokenizer = CharTokenizer.from_text([split.train, split.heldout])
    train_ids = torch.tensor(tokenizer.tokenize(split.train), dtype=torch.long)
    heldout_ids = torch.tensor(tokenizer.tokenize(split.heldout), dtype=torch.long)
    ctx = cfg.max_context_len
    model_cfg = ModelConfig(cfg.n_layers, cfg.n_heads, cfg.embed_size, ctx, tokenizer.vocab_size(),
                            cfg.mlp_hidden_size, cfg.with_residuals)
    device = resolve(cfg.device, "command line")
    model = TransformerLM.from_config(model_cfg).to(device)
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    eval_windows = evenly_spaced_windows(heldout_ids, ctx + 1, cfg.eval_windows)
    offsets = torch.arange(ctx + 1)
    corpus = {"name": split.name, "language": split.language, "description": split.description,
              "sha256": split.sha256, "heldout_books": list(split.heldout_books)}
    save_at = set(cfg.save_at) | {cfg.steps} | set(range(cfg.save_every, cfg.steps + 1, cfg.save_every or cfg.steps))
    history: list[list[float]] = []
    saved: list[Path] = []
    running, heldout_bpc = float("nan"), float("nan")
    start = time.perf_counter()
    with make_progress() as progress:
        task = progress.add_task(f"training {split.name}", total=cfg.steps)
        for step in range(1, cfg.steps + 1):
            model.train()
            starts = torch.randint(0, train_ids.numel() - ctx - 1, (cfg.batch_size,), generator=gen)
            batch = train_ids[starts[:, None] + offsets].to(device)  # (B, ctx + 1)
            for group in optim.param_groups:
                group["lr"] = _lr(step - 1, cfg)
            logits = model(batch[:, :-1])  # (B, ctx, vocab)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            running = loss.item() if step == 1 else 0.98 * running + 0.02 * loss.item()
            if step % cfg.eval_every == 0 or step in save_at:
                heldout_bpc = bits_per_char(model, eval_windows)
                history.append([step, running / LN2, heldout_bpc])
                if not progress.console.is_terminal:  # no live bar in a log file: say where we are
                    progress.console.log(f"step {step}/{cfg.steps}: train {running / LN2:.3f} bits/char, "
                                         f"held-out {heldout_bpc:.3f} ({time.perf_counter() - start:.0f} s)")
            if step in save_at:
                path = cfg.out / f"step{step:05d}.pt"
                save_checkpoint(path, model, tokenizer, step=step, train_loss=running,
                                heldout_bits_per_char=heldout_bpc, corpus=corpus, seed=cfg.seed,
                                history=[list(h) for h in history], batch_size=cfg.batch_size)
                saved.append(path)
                progress.console.log(f"saved {path} (step {step}, held-out {heldout_bpc:.3f} bits/char, "
                                     f"{time.perf_counter() - start:.0f} s)")
            progress.update(task, advance=1, description=(
                f"training {split.name}  loss {running / LN2:.3f} bits/char  held-out {heldout_bpc:.3f}"))
    return saved
