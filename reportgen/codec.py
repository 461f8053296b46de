"""A small JSON codec for frozen dataclasses, driven by their type hints.

Encoding: dataclasses become objects in field order; numpy arrays nested lists; floats are
rounded to 6 significant digits and NaN/inf become null. A field declared with `optional()`
is left out when it is None (it was not computed), so null always means "undefined number"
(decoded as NaN) and absence means "not applicable" (decoded as None).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from functools import lru_cache
from typing import Any

import numpy as np

OMIT = "omit_if_none"


def optional():
    """A dataclass field that is None when not applicable and then absent from the JSON."""
    return dataclasses.field(default=None, metadata={OMIT: True})


def encode(x: Any) -> Any:
    """Any results value -> JSON-safe Python (dicts, lists, str, int, float, bool, None)."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: encode(getattr(x, f.name)) for f in dataclasses.fields(x)
                if not (f.metadata.get(OMIT) and getattr(x, f.name) is None)}
    if isinstance(x, dict):
        return {k: encode(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [encode(v) for v in x]
    if isinstance(x, np.ndarray):
        return encode(x.tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return None if not math.isfinite(x) else float(f"{x:.6g}")
    if isinstance(x, np.integer):
        return int(x)
    return x


@lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def decode(tp: Any, v: Any) -> Any:
    """JSON value -> an instance of type `tp` (dataclasses, containers, numpy arrays, Optional)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if v is None else decode(args[0], v)
    if tp is Any:
        return v
    if tp is float:
        return math.nan if v is None else float(v)
    if tp is np.ndarray:
        if v is None:
            return None
        a = np.asarray(v)
        return a if a.dtype.kind in "iub" else np.asarray(v, dtype=np.float64)  # null entries become NaN
    if dataclasses.is_dataclass(tp):
        if not isinstance(v, dict):
            raise ValueError(f"expected an object for {tp.__name__}, got {type(v).__name__}")
        hints = _hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name not in v:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise ValueError(f"{tp.__name__}: missing field {f.name!r}")
                continue
            value = v[f.name]
            if value is None and f.metadata.get(OMIT):
                kwargs[f.name] = math.nan  # present but undefined
            else:
                kwargs[f.name] = decode(hints[f.name], value)
        return tp(**kwargs)
    if origin in (list, tuple):
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            return tuple(decode(a, x) for a, x in zip(args, v))
        return (tuple if origin is tuple else list)(decode(args[0], x) for x in v)
    if origin is dict:
        _, value_type = typing.get_args(tp)
        return {k: decode(value_type, x) for k, x in v.items()}
    if tp in (int, str, bool):
        if v is not None and not isinstance(v, tp if tp is not int else (int,)):
            raise ValueError(f"expected {tp.__name__}, got {v!r}")
        return v
    return v
