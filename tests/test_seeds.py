"""Seeds of one recipe: roles matched by role (never head index), recurrence counts, and no language difference
claimed from a role one seed has."""

from __future__ import annotations

import copy
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from reportgen.checkpoint import load_checkpoint, save_checkpoint
from reportgen.cli import cli
from reportgen.evidence import Seed, SeedRole
from reportgen.pages import compare_page
from reportgen.results import read_run
from reportgen.seeds import recurrence
from reportgen.synthesis import key_questions

from .planted import write_planted


def _seed(label, roles, drawn=False):
    """A seed record with roles [(layer, head, role, family, primary, effect, delta)]."""
    return Seed(label, None, f"{label}.pt", "0" * 64, drawn, 2.0, 1.9, 2.1, 4.0,
                [SeedRole(l, h, r, fam, "offset_1", p, e, d, d - 0.1, d + 0.1) for l, h, r, fam, p, e, d in roles],
                3.0, 2.5, 0.4, 0.6, 3)


ROLES = [  # per seed: (layer, head, role, family, primary, effect, delta)
    [(0, 1, "previous-character head (offset 1)", "fixed offset", True, 0.9, 2.0),
     (2, 2, "word-start head", "word boundary", True, 0.2, 0.18),
     (2, 3, "word-start head", "word boundary", True, 0.1, 0.05),
     (3, 2, "punctuation head", "punctuation", True, 0.05, 0.02)],
    [(0, 3, "previous-character head (offset 1)", "fixed offset", True, 0.8, 1.5),
     (1, 0, "word-start head", "word boundary", True, 0.3, 0.2),
     (2, 0, "space head", "word boundary", False, 0.4, 0.3)],
    [(0, 0, "previous-character head (offset 1)", "fixed offset", True, 0.7, 1.1),
     (2, 1, "word-start head", "word boundary", True, 0.25, 0.1)],
]


def test_recurrence_counts_roles_per_seed_whatever_the_head_numbering():
    seeds = [_seed(f"seed {k}", r, drawn=k == 0) for k, r in enumerate(ROLES)]
    got = {r.role: r for r in recurrence(seeds)}
    for role in {x[2] for rs in ROLES for x in rs}:  # counted here from the role lists, independently
        per_seed = [len({(l, h) for l, h, name, *_ in rs if name == role}) for rs in ROLES]
        assert got[role].counts == tuple(per_seed)
        assert got[role].present == sum(c > 0 for c in per_seed)
        assert got[role].layers == tuple(tuple(sorted({l for l, _, name, *_ in rs if name == role})) for rs in ROLES)
    assert got["previous-character head (offset 1)"].everywhere and got["previous-character head (offset 1)"].same_layers
    assert got["punctuation head"].present == 1 and not got["punctuation head"].everywhere
    assert not got["word-start head"].same_layers  # layers 2 / 1 / 2
    # the strongest head's effect and its Δ, per seed
    assert got["word-start head"].effects == (0.2, 0.3, 0.25) and got["word-start head"].deltas == (0.18, 0.2, 0.1)
    # any permutation of the heads inside each layer gives the same table
    perm = {0: [2, 3, 1, 0], 1: [1, 0, 3, 2], 2: [3, 2, 0, 1], 3: [0, 2, 3, 1]}
    shuffled = [_seed(f"seed {k}", [(l, perm[l][h], *rest) for l, h, *rest in r], drawn=k == 0)
                for k, r in enumerate(ROLES)]
    assert recurrence(shuffled) == recurrence(seeds)


def permute_heads(ckpt: Path, out: Path, order: list[int]) -> None:
    """Save `ckpt` with the heads of every layer renumbered: new head h is old head order[h] (its q, k, v and
    its block of the output projection), which computes the same function."""
    bundle = load_checkpoint(ckpt)
    model = copy.deepcopy(bundle.model)
    hs = model.config.head_size
    with torch.no_grad():
        for layer in model.layers:
            attn = layer.causal_attention
            old = [(m.weight.clone(), m.bias.clone()) for m in attn.kqv_matrices]
            proj = attn.proj.weight.clone()
            for h, o in enumerate(order):
                attn.kqv_matrices[h].weight.copy_(old[o][0])
                attn.kqv_matrices[h].bias.copy_(old[o][1])
                attn.proj.weight[:, h * hs:(h + 1) * hs] = proj[:, o * hs:(o + 1) * hs]
    meta = bundle.metadata
    save_checkpoint(out, model, bundle.tokenizer, step=meta["step"], train_loss=meta["train_loss"],
                    heldout_bits_per_char=meta["heldout_bits_per_char"], corpus=meta["corpus"], seed=1,
                    history=[], dtype=torch.float32)
    x = torch.arange(20).remainder(bundle.tokenizer.vocab_size())[None]
    torch.testing.assert_close(load_checkpoint(out).model(x)[0], bundle.model(x)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_a_checkpoint_with_permuted_heads_is_the_same_seed_to_the_matching(tmp_path):
    """The planted model and a copy with its heads renumbered, run as two seeds of one recipe (a seedN/ family
    folder): every role recurs in both seeds in the same layers with the same numbers, although no role sits on
    the same head index."""
    family = tmp_path / "family"
    (family / "seed0").mkdir(parents=True)
    ckpt, text = write_planted(family / "seed0")
    (family / "seed1").mkdir()
    order = [2, 3, 1, 0]
    permute_heads(ckpt, family / "seed1" / "planted.pt", order)
    out = tmp_path / "site"
    assert cli(["run", "--model", str(family), "--label", "Planted", "--language", "en", "--text", str(text),
                "--out", str(out), "--train-windows", "48", "--no-pdf"]) == 0
    m = read_run(out).models[0]
    assert [s.label for s in m.seeds] == ["seed 0", "seed 1"] and m.seeds[0].drawn and not m.seeds[1].drawn
    # the drawn seed's record is the drawn model's own replicated roles
    assert sorted((r.layer, r.head, r.role) for r in m.seeds[0].roles) == \
        sorted((f.layer, f.head, f.role) for f in m.replicated)
    roles = {r.role: r for r in recurrence(m.seeds)}
    assert roles and all(r.present == 2 and r.counts[0] == r.counts[1] and r.same_layers for r in roles.values())
    where = [{(r.role, r.head) for r in s.roles} for s in m.seeds]
    assert where[1] == {(role, order.index(h)) for role, h in where[0]}  # found on the renumbered heads
    for r in roles.values():
        assert r.effects[0] == pytest.approx(r.effects[1], abs=2e-3)
        assert r.deltas[0] == pytest.approx(r.deltas[1], abs=2e-3)
    assert "Across seeds" in (out / "model-planted.html").read_text()
    assert "recurs in all 2 seeds of this recipe, in layer 0 each time" in (out / "head-planted-L0H0.html").read_text()
    doc = json.loads((out / "results.json").read_text())
    assert len(doc["models"][0]["seeds"]) == 2


def _two_models(run, en_seed1_roles):
    """The planted run as 'English' and a 'Hebrew' copy without its space head, each with two seed records."""
    en = run.models[0]
    space = next(f for f in en.primary if f.role == "space head")
    roles0 = [(f.layer, f.head, f.role, f.family, f.primary, f.effect, 0.1) for f in en.replicated]
    he_roles = [x for x in roles0 if x[2] != "space head"]
    en = replace(en, label="English", seeds=[_seed("seed 0", roles0, True), _seed("seed 1", en_seed1_roles(roles0))])
    he = replace(run.models[0], label="Hebrew", slug="hebrew", findings=[f for f in en.findings if f is not space],
                 seeds=[_seed("seed 0", he_roles, True), _seed("seed 1", he_roles)])
    return [en, he]


def test_a_role_in_one_seed_is_never_a_language_difference(planted_site):
    out, _ = planted_site
    run = read_run(out)
    models = _two_models(run, lambda roles: [x for x in roles if x[2] != "space head"])  # seed 1 lacks it
    q5 = " ".join(key_questions(models)[4].a)
    assert "space head: English in 1 of 2 seeds; Hebrew in 0 of 2 seeds" in q5
    assert "not a difference between the models" in q5 and "holds across seeds" not in q5
    c = compare_page(models, {})
    only = [o for o in c.only if o.startswith("word boundary")]
    assert only and "in 1 of 2 seeds of English" in only[0] and "not a difference in every seed" in only[0]
    assert [row for row in c.roles if row[0] == "space head"][0][1] == [(1, 2), (0, 2)]
    # when both English seeds have it and neither Hebrew seed does, the difference holds
    models = _two_models(run, lambda roles: roles)
    q5 = " ".join(key_questions(models)[4].a)
    assert "space head: English in 2 of 2 seeds; Hebrew in 0 of 2 seeds — only in English, in every seed" in q5
    only = [o for o in compare_page(models, {}).only if o.startswith("word boundary")]
    assert "holds in every seed" in only[0]
    counts = Counter(r.role for s in models[0].seeds for r in s.roles)
    assert counts["space head"] == 2


TINY = ["--layers", "1", "--heads", "4", "--embed", "32", "--context", "16", "--mlp", "32", "--batch-size", "16",
        "--lr", "5e-3", "--steps", "1500", "--threads", "1"]


@pytest.mark.slow
def test_two_trained_seeds_recur_as_each_seed_drawn_on_its_own_finds(tmp_path):
    """Two seeds of a tiny model trained here on a small text. The recurrence counts of a run drawing seed 0 are
    computed independently: each seed's roles are read from a second run that draws seed 1 instead (its roles
    then come from the drawn model's own detectors and replication, not from the seed record), and counted here."""
    from .planted import planted_text

    text = tmp_path / "text.txt"
    text.write_text(planted_text(24000))
    family = tmp_path / "family"
    for s in (0, 1):
        assert cli(["train", "--text", str(text), *TINY, "--seed", str(s), "--out", str(family / f"seed{s}")]) == 0
    common = ["--train-windows", "48", "--no-pdf"]
    assert cli(["run", "--model", str(family), "--label", "Tiny", "--language", "en", "--text", str(text),
                "--out", str(tmp_path / "a"), *common]) == 0
    (tmp_path / "b.toml").write_text(  # seed 1 drawn, seed 0 beside it
        f'[[model]]\npath = "{family / "seed1"}"\nlabel = "Tiny"\nlanguage = "en"\ntext = "{text}"\n'
        f'seeds = ["{family / "seed0"}"]\n')
    assert cli(["run", "--config", str(tmp_path / "b.toml"), "--out", str(tmp_path / "b"), *common]) == 0
    a, b = read_run(tmp_path / "a").models[0], read_run(tmp_path / "b").models[0]
    assert [s.label for s in a.seeds] == ["seed 0", "seed 1"] and [s.label for s in b.seeds] == ["seed 1", "seed 0"]
    drawn = {0: a.replicated, 1: b.replicated}  # each seed's replicated roles as the drawn model
    names = sorted({f.role for fs in drawn.values() for f in fs})
    assert names, "the tiny seeds were meant to learn at least one role; the test would check nothing"
    got = {r.role: r for r in recurrence(a.seeds)}
    assert sorted(got) == names
    for role in names:
        counts = tuple(len({(f.layer, f.head) for f in drawn[s] if f.role == role}) for s in (0, 1))
        assert got[role].counts == counts and got[role].present == sum(c > 0 for c in counts)
        layers = tuple(tuple(sorted({f.layer for f in drawn[s] if f.role == role})) for s in (0, 1))
        assert got[role].layers == layers
    # seed 1's record in run a is what run b's analysis found when seed 1 was drawn, number for number
    rec = {(r.layer, r.head, r.role): (r.effect, r.delta) for r in a.seeds[1].roles}
    assert rec == {(r.layer, r.head, r.role): (r.effect, r.delta) for r in b.seeds[0].roles}
    assert a.seeds[1].bits_per_char == b.seeds[0].bits_per_char
    page = (tmp_path / "a" / "model-tiny.html").read_text()
    for role in names:
        assert f"{got[role].present} of 2" in page
