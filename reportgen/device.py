"""Where models run (`--device`): the CPU, or an accelerator when one is asked for or available.

Only forward passes move. A model placed on an accelerator takes CPU inputs and returns CPU
outputs, so every statistic, null and figure is computed by the same CPU code whatever the
device; on the CPU nothing changes at all (no hooks, the same numbers bit for bit).
"""

from __future__ import annotations

import re
from typing import Any

import torch

from .errors import ReportgenError

AUTO = "auto"
NAME = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")
CPU = torch.device("cpu")


def resolve(name: str | None, where: str = "device") -> torch.device:
    """'auto' (or None) -> cuda when torch sees a GPU, else cpu; 'cpu', 'cuda', 'cuda:N', 'mps' checked."""
    name = AUTO if name is None else name
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ReportgenError(f"{where}: device must be auto, cpu, cuda, cuda:N or mps, not {name!r}")
    if name == AUTO:
        return torch.device("cuda") if torch.cuda.is_available() else CPU
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ReportgenError(f"{where}: device {name}: torch sees no CUDA GPU on this machine (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ReportgenError(f"{where}: device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ReportgenError(f"{where}: device mps: torch sees no Apple GPU on this machine (use --device cpu)")
    return device


def _to(x: Any, device: torch.device) -> Any:
    """Tensors inside tuples, lists and dicts moved to `device`; everything else as it is."""
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, (tuple, list)):
        return type(x)(_to(v, device) for v in x)
    if isinstance(x, dict):
        return {k: _to(v, device) for k, v in x.items()}
    return x


def place(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move `model` to `device`; off the CPU, its forward takes and returns CPU tensors (hooks, added once)."""
    model.to(device)
    if device.type != "cpu" and not getattr(model, "_reportgen_placed", False):
        model.register_forward_pre_hook(lambda m, args, kwargs: (_to(args, device), _to(kwargs, device)),
                                        with_kwargs=True)
        model.register_forward_hook(lambda m, args, out: _to(out, CPU))
        model._reportgen_placed = True
    return model


def device_of(model: torch.nn.Module) -> torch.device:
    """The device holding the model's parameters."""
    return next(model.parameters()).device
