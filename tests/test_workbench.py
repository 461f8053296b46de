"""A researcher's workbench (issue 24): one loader for every entry point, and the Python API's activations,
ablation and patching, direct logit attribution, hypothesis tests and notebook explorer.

The course checkpoint here is trained for a few dozen steps without residual connections and saved the course's
way (no props JSON, so the setting is not recorded): the run infers it from the text, and export, info and
`api.load` must build the same model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reportgen import api
from reportgen.cli import cli
from reportgen.errors import ReportgenError
from reportgen.model import TransformerLM
from reportgen.tokenizer import CharTokenizer

from .planted import planted_text


@pytest.fixture(scope="module")
def course_run(tmp_path_factory):
    """(root, run folder, text file): a no-residual course checkpoint with tokenizer.json and its text."""
    root = tmp_path_factory.mktemp("course")
    text = planted_text(12000)
    (root / "text.txt").write_text(text)
    tok = CharTokenizer.from_text([text])
    folder = root / "run"
    folder.mkdir()
    tok.save(folder / "tokenizer.json")
    torch.manual_seed(0)
    model = TransformerLM(2, 2, 32, 32, tok.vocab_size(), 64, with_residuals=False)
    ids = torch.tensor(tok.tokenize(text))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        starts = torch.randint(0, len(ids) - 33, (32,), generator=g)
        batch = ids[starts[:, None] + torch.arange(33)]
        loss = F.cross_entropy(model(batch[:, :-1]).transpose(1, 2), batch[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.save({"model_state_dict": model.state_dict(), "step": 60, "loss": float(loss.detach())},
               folder / f"checkpoint_step60_loss{float(loss.detach()):.2f}.pt")
    return root, folder, root / "text.txt"


def _run_bundle(folder: Path, text: Path):
    """The model `reportgen run` analyses: its own preparation step (load, text, inferred residual setting)."""
    from reportgen.analyze import prepare
    from reportgen.config import ModelSpec, build_config

    spec = ModelSpec(folder, "course", "en", text)
    return prepare(spec, build_config(None, models=(spec,), out=folder.parent / "unused")).bundle


def test_export_info_and_api_build_the_runs_model_from_a_no_residual_course_checkpoint(course_run, capsys):
    root, folder, text = course_run
    run = _run_bundle(folder, text)
    assert run.config.with_residuals is False  # inferred by the run from its text
    passage = text.read_text()[:32]
    want = api.attention(run, passage)

    model = api.load(folder, text=text)
    assert model.config == run.config and model.tokenizer.vocab == run.tokenizer.vocab
    np.testing.assert_array_equal(api.attention(model, passage), want)
    assert model.metadata["with_residuals_inferred"] == run.metadata["with_residuals_inferred"]

    out = root / "a.npz"
    assert cli(["export", "--model", str(folder), "--text", str(text), "--windows", "1", "--out", str(out)]) == 0
    with np.load(out) as d:
        np.testing.assert_array_equal(d["attention_0"], want)
    assert cli(["export", "--model", str(folder), "--passage", passage, "--out", str(out), "--force"]) == 0
    with np.load(out) as d:  # passages only: the setting is inferred on them
        np.testing.assert_array_equal(d["attention_0"], want)

    capsys.readouterr()
    assert cli(["info", str(folder), "--text", str(text)]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["with_residuals"] is False
    assert cli(["info", str(folder)]) == 0  # no text: said to be unknown, not guessed
    captured = capsys.readouterr()
    assert json.loads(captured.out)["config"]["with_residuals"] is None
    assert len(captured.err.strip().splitlines()) == 1 and "--text" in captured.err


def test_without_a_text_an_undecided_course_checkpoint_is_a_one_line_error_and_flags_are_checked(course_run, capsys):
    root, folder, text = course_run
    with pytest.raises(ReportgenError, match="does not record whether it was trained with residual") as err:
        api.load(folder)
    assert "\n" not in str(err.value)
    forced = api.load(folder, with_residuals=False)  # said, not inferred: the same model
    np.testing.assert_array_equal(api.attention(forced, "the cat"), api.attention(api.load(folder, text=text),
                                                                                  "the cat"))
    capsys.readouterr()
    assert cli(["export", "--model", str(folder), "--passage", "the cat", "--out", str(root / "b.npz")]) == 0
    reportgen_ckpt = Path(__file__).parent.parent / "inputs" / "models" / "en" / "step00250.pt"
    with pytest.raises(ReportgenError, match="apply to course checkpoints"):
        api.load(reportgen_ckpt, with_residuals=False)


# ---- activations, ablation, patching, direct logit attribution ------------------------------------------------

MODEL = Path(__file__).parent.parent / "inputs" / "models" / "en" / "step05000.pt"
TEXT = "In the beginning God created the heaven and the earth."
OTHER = "In the beginning God created the earth and the heaven."  # the same length


@pytest.fixture(scope="module")
def en():
    return api.load(MODEL)


def test_the_cache_holds_every_activation_and_they_fit_together(en):
    cache = api.run_with_cache(en, TEXT)
    L, H, D, hs, N = 4, 4, en.config.embed_size, en.config.head_size, len(TEXT)
    shapes = {"resid_pre": (N, D), "q": (H, N, hs), "k": (H, N, hs), "v": (H, N, hs), "pattern": (H, N, N),
              "z": (H, N, hs), "result": (H, N, D), "attn_out": (N, D), "resid_mid": (N, D), "mlp_out": (N, D),
              "resid_post": (N, D)}
    assert set(shapes) == set(cache.names)
    for name, shape in shapes.items():
        assert cache[name].shape == (L, *shape), name
    np.testing.assert_array_equal(cache["pattern"], api.attention(en, TEXT))
    np.testing.assert_allclose(cache.logits, api.logits(en, TEXT), atol=1e-4)
    for layer in range(L):
        attn = en.model.layers[layer].causal_attention
        q, k, v = cache["q", layer], cache["k", layer], cache["v", layer]
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(hs) + np.triu(np.full((N, N), -np.inf), 1)
        pattern = np.exp(scores - scores.max(-1, keepdims=True))
        np.testing.assert_allclose(pattern / pattern.sum(-1, keepdims=True), cache["pattern", layer], atol=1e-5)
        np.testing.assert_allclose(cache["pattern", layer] @ v, cache["z", layer], atol=1e-5)
        bias = attn.proj.bias.detach().numpy()
        np.testing.assert_allclose(cache["result", layer].sum(0) + bias, cache["attn_out", layer], atol=1e-4)
        np.testing.assert_allclose(cache["resid_pre", layer] + cache["attn_out", layer], cache["resid_mid", layer],
                                   atol=1e-5)
        if layer + 1 < L:
            np.testing.assert_array_equal(cache["resid_post", layer], cache["resid_pre", layer + 1])
    np.testing.assert_array_equal(cache["resid_post", L - 1], cache.final_resid)
    batch = api.run_with_cache(en, [TEXT, OTHER])
    assert batch["q", 0].shape == (2, H, N, hs)
    np.testing.assert_allclose(batch["z", 2][0], cache["z", 2], atol=1e-6)


def test_ablation_contexts_match_the_models_own_ablation_and_restore_it(en):
    before = api.logits(en, TEXT)
    ids = torch.tensor([en.tokenizer.tokenize(TEXT)])
    with en.model.ablate({(0, 2): "zero", (1, 0): "uniform"}):
        want = en.model(ids)[0].detach().numpy()
    with api.ablate(en, {"L0H2": "zero", (1, 0): "uniform"}):
        np.testing.assert_array_equal(api.logits(en, TEXT), want)
        cache = api.run_with_cache(en, TEXT)
        assert not cache["z", 0][2].any()
        rows = cache["pattern", 1][0]
        np.testing.assert_allclose(rows, np.tril(np.ones_like(rows)) / np.arange(1, len(TEXT) + 1)[:, None])
        with api.ablate(en, ["L2H1"], "zero"):  # nested: the inner block adds to the outer one's heads
            assert not api.run_with_cache(en, TEXT)["z", 2][1].any()
        assert api.run_with_cache(en, TEXT)["z", 2][1].any() and not api.run_with_cache(en, TEXT)["z", 0][2].any()
    np.testing.assert_array_equal(api.logits(en, TEXT), before)  # restored bit for bit
    with api.ablate(en, ["L0H2"], "mean", reference=TEXT * 4):
        z = api.run_with_cache(en, TEXT)["z", 0][2]
        assert np.allclose(z, z[0]) and api.loss(en, TEXT) != pytest.approx(api.loss(en, OTHER))
    with api.ablate(en, ["L0H2"], "resample"):  # each text takes the head's output on the other
        z = api.run_with_cache(en, [TEXT, OTHER])["z", 0][:, 2]
    clean = api.run_with_cache(en, [TEXT, OTHER])["z", 0][:, 2]
    np.testing.assert_allclose(z, clean[::-1], atol=1e-6)
    for call, match in ((lambda: api.ablate(en, ["L0H2"], "mean"), "reference"),
                        (lambda: api.ablate(en, ["L9H0"]), "no head L9H0"),
                        (lambda: api.ablate(en, ["L0H2"], "random"), "unknown ablation mode")):
        with pytest.raises(ReportgenError, match=match):
            with call():
                pass
    with pytest.raises(ReportgenError, match="two or more texts"):
        with api.ablate(en, ["L0H2"], "resample"):
            api.logits(en, TEXT)


def test_patching_puts_a_heads_output_on_another_input_in_place(en):
    clean, other = api.run_with_cache(en, TEXT), api.run_with_cache(en, OTHER)
    with api.patch(en, ["L1H0", "L1H3"], OTHER):
        cache = api.run_with_cache(en, TEXT)
        np.testing.assert_array_equal(cache["z", 1][[0, 3]], other["z", 1][[0, 3]])
        np.testing.assert_array_equal(cache["z", 1][[1, 2]], clean["z", 1][[1, 2]])  # the other heads of the layer
        np.testing.assert_array_equal(cache["pattern", :2], clean["pattern", :2])  # and the layers up to it: unchanged
        assert not np.allclose(cache["pattern", 2], clean["pattern", 2], atol=1e-3)  # later layers read the patch
        patched = api.loss(en, TEXT)
        with pytest.raises(ReportgenError, match="same length"):
            api.logits(en, TEXT[:-1])
    assert patched != api.loss(en, TEXT)
    np.testing.assert_array_equal(api.run_with_cache(en, TEXT)["z", 1], clean["z", 1])  # gone after the block
    with api.patch(en, ["L1H0", "L1H3"], TEXT):  # from its own input: what the model computes anyway
        np.testing.assert_allclose(api.logits(en, TEXT), clean.logits, atol=1e-5)


def test_logit_attribution_is_each_heads_direct_logit_of_the_next_character(en):
    dla = api.logit_attribution(en, TEXT)
    assert dla.shape == (4, 4, len(TEXT) - 1)
    nxt = en.tokenizer.tokenize(TEXT)[1:]
    for layer, head in ((0, 2), (3, 1)):
        full = api.direct_logits(en, TEXT, layer, head)  # (N, V)
        np.testing.assert_allclose(dla[layer, head], full[np.arange(len(nxt)), nxt], atol=1e-6)
    np.testing.assert_allclose(api.logit_attribution(en, [TEXT, OTHER])[0], dla, atol=1e-5)


def test_the_explorer_is_self_contained_deterministic_html_with_every_head(en):
    explorer = api.explore(en, TEXT)
    page = explorer._repr_html_()
    assert page == api.explore(en, TEXT)._repr_html_()
    assert "http" not in page and " src=" not in page and "@import" not in page and "fetch(" not in page
    assert all(f">L{l}H{h}<" in page for l in range(4) for h in range(4))
    data = json.loads(page.split("<script type='application/json'>")[1].split("</script>")[0])
    attn = api.attention(en, TEXT)
    assert data["text"] == list(TEXT)
    assert data["attn"][4 * 1 + 2][10] == [int(round(float(v) * 1000)) for v in attn[1, 2, 10, :11]]
    hebrew = api.load(MODEL.parent.parent / "he" / "step05000.pt")
    assert "dir='auto'" in api.explore(hebrew, "בראשית ברא")._repr_html_()


# ---- hypotheses tested from Python with the run's statistics --------------------------------------------------

def test_api_test_gives_the_runs_numbers_for_a_hypothesis_and_the_built_in_detector_it_restates(tmp_path):
    """`reportgen analyze` with a key_offset = 1 hypothesis in its settings, and `api.test` of the same hypothesis:
    every field of every head on both splits (mean, chance, CI, p, q, ...; as results.json holds them, to 6
    significant digits) and the findings are the same, and they are the run's offset_1 numbers too (one BH family:
    the run's detectors, probes and the hypothesis)."""
    from .planted import write_planted

    ckpt, text = write_planted(tmp_path)
    toml = tmp_path / "h.toml"
    toml.write_text(f'train_windows = 48\nablation_windows = 0\ntimeline_windows = 0\n[[model]]\npath = "{ckpt}"\n'
                    f'label = "Planted"\nlanguage = "en"\ntext = "{text}"\n'
                    '[[hypothesis]]\nname = "prev"\ndescription = "reads the previous character"\nkey_offset = 1\n')
    assert cli(["analyze", "--config", str(toml), "--out", str(tmp_path / "run")]) == 0
    (m,) = json.loads((tmp_path / "run" / "results.json").read_text())["models"]

    result = api.test(api.Hypothesis("prev", "reads the previous character", key_offset=1), api.load(ckpt), text,
                      settings=toml)
    assert result.n_windows == m["corpus"]["windows"]
    compared = 0
    for head in m["heads"]:
        for split in ("train", "heldout"):
            ours = {k: float(v[head["layer"], head["head"]]) for k, v in result.fields["hyp_prev"][split].items()}
            for name in ("hyp_prev", "offset_1"):
                run = head["detectors"][name][split]
                assert set(run) == set(ours)
                for key, value in run.items():  # results.json holds 6 significant digits, NaN as null
                    mine = float(f"{ours[key]:.6g}") if np.isfinite(ours[key]) else None
                    assert mine == value, (name, split, key, mine, value)
                    compared += 1
    assert compared > 100
    run_found = [(f["head_name"], f["replicated"], f["heldout"]["q"])
                 for f in m["findings"] if f["pattern"] == "hyp_prev"]
    assert [(f.head_name, f.replicated, float(f"{f.heldout.q:.6g}")) for f in result.findings] == run_found
    assert result.supported == ["L0H0"]  # the planted previous-character head
    assert result.summary(0, 0).q < 0.05 and result.summary(0, 3).mean < 0.5
    table = result._repr_html_()
    assert "L0H0" in table and "replicated" in table and result.rules["hyp_prev"].split(" (")[0][:20] in table
    # the same test on the text given as a string splits it the same way
    again = api.test({"name": "prev", "key_offset": 1}, api.load(ckpt), text.read_text(), settings=toml)
    np.testing.assert_array_equal(again.fields["hyp_prev"]["heldout"]["ci_low"],
                                  result.fields["hyp_prev"]["heldout"]["ci_low"])
    with pytest.raises(ReportgenError, match="api.test: hypothesis 1"):
        api.test({"name": "Bad Name", "key_offset": 1}, api.load(ckpt), text)
    with pytest.raises(ReportgenError, match="unknown option"):
        api.test({"name": "prev", "key_offset": 1}, api.load(ckpt), text, windows=3)


# ---- the README's examples ------------------------------------------------------------------------------------

def test_every_api_call_in_the_readme_runs(monkeypatch, capsys):
    """Each ```python block of the README runs as written, and every `api.NAME(` it shows is called while it does."""
    import re

    readme = Path(__file__).parent.parent / "README.md"
    blocks = re.findall(r"```python\n(.*?)```", readme.read_text(encoding="utf-8"), re.S)
    shown = {name for code in blocks for name in re.findall(r"\bapi\.(\w+)\(", code)}
    assert {"run_with_cache", "ablate", "patch", "logit_attribution", "test", "explore"} <= shown
    called: set[str] = set()

    def counting(name):
        original = getattr(api, name)

        def wrapper(*args, **kwargs):
            called.add(name)
            return original(*args, **kwargs)
        return wrapper

    for name in shown:
        original = getattr(api, name)
        if isinstance(original, type):  # a class (api.Hypothesis): count its instances, keep the class itself
            init = original.__init__
            monkeypatch.setattr(original, "__init__", lambda self, *a, _n=name, _i=init, **k: (called.add(_n),
                                                                                               _i(self, *a, **k))[1])
        else:
            monkeypatch.setattr(api, name, counting(name))
    monkeypatch.chdir(readme.parent)
    spaces = []
    for code in blocks:
        spaces.append({})
        exec(compile(code, "README.md", "exec"), spaces[-1])
    assert called == shown
    notebook = next(s for s in spaces if "result" in s)
    model, text = notebook["model"], notebook["text"]
    assert notebook["ablated"] > notebook["clean"]  # two heads the model uses, zeroed
    assert notebook["patched"].shape == (len(text), model.tokenizer.vocab_size())
    assert not np.allclose(notebook["patched"], api.logits(model, text), atol=1e-3)
    result = notebook["result"]
    assert result.supported and result.supported == [f.head_name for f in result.findings if f.replicated]
    assert all(result.summary(*map(int, h[1:].split("H"))).q < 0.05 for h in result.supported)
