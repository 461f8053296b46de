"""Mechanisms on a planted two-layer circuit (tests/planted.py): a previous-character head in layer 0 whose write
the layer-1 induction head's keys read (K-composition), a copying head and a non-copying one. The CLI must find
exactly that composition edge, both write verdicts and the resample effects; direct logits through the API must
equal a computation straight from the weights."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from reportgen import api
from reportgen.evidence import Circuit
from reportgen.circuits import composition
from reportgen.classes import CharClasses
from tests.planted import CIRCUIT_EDGES, planted_circuit_model, planted_text, write_planted_circuit
from reportgen.tokenizer import CharTokenizer


@pytest.fixture(scope="module")
def circuit_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("circuit")
    ckpt, text = write_planted_circuit(folder)
    out = folder / "out"
    settings = folder / "small.toml"  # fewer windows: the circuit is planted, its effects are large
    settings.write_text("n_probes = 16\nablation_windows = 32\ncontrol_windows = 32\n", encoding="utf-8")
    subprocess.run([sys.executable, "-m", "reportgen", "analyze", "--model", str(ckpt), "--text", str(text),
                    "--language", "en", "--out", str(out), "--config", str(settings), "--train-windows", "48"],
                   check=True, capture_output=True)
    return json.loads((out / "results.json").read_text())["models"][0]


@pytest.mark.slow
def test_cli_finds_the_planted_circuit_and_what_each_head_writes(circuit_run):
    m = circuit_run
    edges = {(e["source"], e["target"]) for e in m["circuit"]["measured"] if e["edge"]}
    assert edges == CIRCUIT_EDGES  # a missing or an extra edge fails
    (edge,) = [e for e in m["circuit"]["measured"] if e["edge"]]
    assert edge["cut"] >= 0.5 and edge["ci_low"] > 0 and edge["ablated"] < edge["clean"]
    writes = {w["head_name"]: w for w in m["writes"]}
    assert writes["L1H0"]["verdict"] == "copies" and writes["L1H0"]["copy_top1"] >= 0.3
    assert writes["L0H0"]["verdict"] != "copies"  # it writes into a subspace no logit reads
    abl = {a["head_name"]: a for a in m["ablation"]}
    assert m["ablation_mode"] == "resample" and abl["L0H0"]["mode"] == "resample"
    for name in ("L0H0", "L1H0"):  # the circuit's heads change the loss (through L1H0's copy), with a CI around it
        a = abl[name]
        assert a["delta_bits_per_char"] != 0 and a["ci_low"] <= a["delta_bits_per_char"] <= a["ci_high"]
    assert abl["L0H1"]["delta_bits_per_char"] == 0 and abl["L1H1"]["delta_bits_per_char"] == 0  # silent heads
    assert abl["L0H0"]["second_mode"] == "mean" and abl["L0H0"]["second_delta"] is not None


def test_composition_edge_needs_the_earlier_head():
    text = planted_text()
    tok = CharTokenizer.from_text([text])
    model = planted_circuit_model(tok)
    ids = torch.tensor(tok.tokenize(text))[: 24 * 32].view(24, 32)
    codes = torch.as_tensor(CharClasses.for_vocab(tok.vocab, "en").lookup())[ids]
    circuit = composition(model, ids, codes, [(1, 0, "induction"), (1, 1, "class_space")], {}, tok.vocab_size(),
                          np.random.default_rng(0))
    assert isinstance(circuit, Circuit) and len(circuit.measured) == 4  # two earlier heads x two role heads
    assert {(e.source, e.target) for e in circuit.edges} == CIRCUIT_EDGES


def test_direct_logits_through_the_api_equal_the_weights(tmp_path):
    ckpt, _ = write_planted_circuit(tmp_path)
    bundle = api.load(ckpt)
    m = bundle.model
    text = "in the beginning god created the"
    got = api.direct_logits(bundle, text, 1, 0)  # (N, V)
    # straight from the weights: the head's attention-weighted values, its slice of the projection, the final
    # LayerNorm's scale at each position (of the full pass) and weight, the unembedding; centred
    ids = torch.tensor([bundle.tokenizer.tokenize(text)])
    with torch.no_grad():
        x = m.embed(ids)
        x = m.layers[0](x)[0]  # the first block (its MLP writes nothing), residual included
        blk = m.layers[1]
        hs = m.config.head_size
        h = blk.layer_norm_1(x)
        w = blk.causal_attention.kqv_matrices[0]
        k, q, v = (h @ w.weight[i * hs:(i + 1) * hs].T + w.bias[i * hs:(i + 1) * hs] for i in range(3))
        scores = (q @ k.transpose(-1, -2)) / hs ** 0.5
        n = scores.shape[-1]
        scores = scores.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))
        y = torch.softmax(scores, -1) @ v  # (1, N, hs)
        write = y @ blk.causal_attention.proj.weight[:, :hs].T  # (1, N, D)
        final = m.layers[1](x)[0]
        sigma = (final.var(-1, unbiased=False, keepdim=True) + m.layer_norm.eps).sqrt()
        write = write - write.mean(-1, keepdim=True)
        logits = (write / sigma * m.layer_norm.weight) @ m.word_prediction.weight.T
        logits = (logits - logits.mean(-1, keepdim=True))[0].numpy()
    np.testing.assert_allclose(got, logits, atol=1e-4)
    top_api, top_weights = got.argmax(1), logits.argmax(1)
    assert (top_api == top_weights).all()  # the character each position's write raises most


def test_what_a_head_writes_is_not_computed_without_residuals(tmp_path):
    text = planted_text()
    tok = CharTokenizer.from_text([text])
    model = planted_circuit_model(tok)
    ids = torch.tensor(tok.tokenize(text))[: 8 * 32].view(8, 32)
    classes = CharClasses.for_vocab(tok.vocab, "en")
    from reportgen.writes import head_writes

    assert head_writes(model, ids, classes, [(1, 0)], np.random.default_rng(0))[0].verdict == "copies"
    flat = type(model).from_config(dataclasses.replace(model.config, with_residuals=False))
    flat.load_state_dict(model.state_dict())
    assert head_writes(flat, ids, classes, [(1, 0)], np.random.default_rng(0)) == []  # nothing it writes into
    ckpt, _ = write_planted_circuit(tmp_path)
    with pytest.raises(Exception, match="residual"):
        api.direct_logits(dataclasses.replace(api.load(ckpt), model=flat), "in the beginning", 1, 0)


def test_composition_scores_resumed_at_the_ablated_layer_equal_the_full_pass_bit_for_bit():
    """Each earlier head's removal is scored by a pass resumed at its own layer (the weights below copied from the
    clean pass); every detector and probe value of every head must equal a full pass under the same ablation."""
    from reportgen.circuits import BATCH, _Clean, _scores
    from reportgen.model import TransformerLM

    torch.manual_seed(3)
    model = TransformerLM(4, 2, 16, 32, 12, 32, True).eval()
    ids = torch.randint(0, 12, (40, 32))  # two batches, the second short
    codes = torch.randint(0, 4, (40, 32))
    probes = {"probe_random": (torch.randint(0, 12, (6, 32)), 8)}
    clean = _scores(model, ids, codes, probes, 12)
    stored = _Clean(model, ids, probes, BATCH)
    for layer in range(3):
        with model.ablate({(layer, 1): "resample"}, shift=1):
            full = _scores(model, ids, codes, probes, 12)
            resumed = _scores(model, ids, codes, probes, 12, clean=stored, layer=layer)
        for part in (0, 1):
            assert full[part].keys() == resumed[part].keys()
            for name, v in full[part].items():
                assert np.array_equal(v, resumed[part][name], equal_nan=True), (layer, name)
        assert not np.array_equal(full[0]["induction"][:, layer + 1:], clean[0]["induction"][:, layer + 1:])


def test_composition_without_room_for_the_clean_pass_gives_the_same_circuit(monkeypatch):
    """Past `CLEAN_BYTES` every ablated pass starts afresh (a long context's attention is large); the edges and
    every number on them are the same either way."""
    from reportgen import circuits

    text = planted_text()
    tok = CharTokenizer.from_text([text])
    model = planted_circuit_model(tok)
    ids = torch.tensor(tok.tokenize(text))[: 24 * 32].view(24, 32)
    codes = torch.as_tensor(CharClasses.for_vocab(tok.vocab, "en").lookup())[ids]
    targets = [(1, 0, "induction"), (1, 1, "class_space")]
    kept = composition(model, ids, codes, targets, {}, tok.vocab_size(), np.random.default_rng(0))
    monkeypatch.setattr(circuits, "CLEAN_BYTES", 0)
    afresh = composition(model, ids, codes, targets, {}, tok.vocab_size(), np.random.default_rng(0))
    assert kept == afresh and len(kept.measured) == 4
