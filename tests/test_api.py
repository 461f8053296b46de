"""The README's Python API example runs as written, and the API agrees with the capture path."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from reportgen import api

README = Path(__file__).parent.parent / "README.md"


def test_readme_python_example_runs(capsys, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks
    monkeypatch.chdir(README.parent)
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
    shape, value = capsys.readouterr().out.strip().rsplit(" ", 1)
    assert shape.startswith("(4, 4, 28, 28)") and 0.5 < float(value) <= 1.0


def test_attention_rows_are_causal_distributions_and_export_round_trips(tmp_path):
    model = api.load(README.parent / "inputs" / "models" / "he" / "step05000.pt")
    text = "בראשית ברא אלהים את השמים"
    attn = api.attention(model, text)
    assert attn.shape == (4, 4, len(text), len(text))
    np.testing.assert_allclose(attn.sum(-1), 1.0, atol=1e-5)
    assert np.allclose(np.triu(attn, 1), 0)
    path = api.export(model, [text, text[:10]], tmp_path / "a.npz")
    with np.load(path) as d:
        assert str(d["text_1"]) == text[:10] and d["attention_1"].shape == (4, 4, 10, 10)
        assert [str(c) for c in d["class_names"]][d["classes_0"][6]] == "space"
