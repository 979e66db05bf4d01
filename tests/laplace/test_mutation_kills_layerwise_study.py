"""The whole result of ``layerwise_study`` against hand-computed values (tests/MUTATION.md, fourth pass (b)).

The protocol tests check the metrics of the rows they read, on a cached study: the keys of the result, the config
block, the row descriptions (depth, kind, size, prior, evidence), the greedy steps' fields, the order of the
``on_map`` / ``on_row`` callbacks, the last-layer choice without a head group and ``progress=False`` were not
checked. References: a separate :func:`bayespeft.laplace.fit` per set of groups (its GLM predictive and evidence),
metrics written out in numpy, the greedy order by brute force.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import bayespeft.laplace as bl
from bayespeft.laplace.groups import ParamGroup
from bayespeft.laplace.layerwise_study import layerwise_study

PRIOR, TEMP = 0.5, 2.0


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 5), nn.Tanh(), nn.Linear(5, 4), nn.Tanh(),
                         nn.Linear(4, 3)).double()


def loader(seed: int, n: int = 12):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=g, dtype=torch.float64)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, torch.randint(0, 3, (n,), generator=g)), batch_size=6)


def group(model, name, depth, kind, *modules):
    names = tuple(f"{m}.{p}" for m in modules for p in ("weight", "bias"))
    sizes = dict(model.named_parameters())
    return ParamGroup(name, depth, kind, names, sum(sizes[n].numel() for n in names))


def metrics(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Top-label ECE (15 equal-width bins, last closed), NLL, accuracy, Brier, written out."""
    conf, pred = p.max(1), p.argmax(1)
    idx = np.minimum((conf * 15).astype(int), 14)
    ece = sum((idx == b).mean() * abs((pred[idx == b] == y[idx == b]).mean() - conf[idx == b].mean())
              for b in range(15) if (idx == b).any())
    return {"ece": float(ece), "nll": float(-np.log(p[np.arange(len(y)), y]).mean()),
            "acc": float((pred == y).mean()), "brier": float(((p - np.eye(3)[y]) ** 2).sum(1).mean())}


def assert_metrics(got: dict, want: dict) -> None:
    assert set(got) == {"ece", "nll", "acc", "brier"}
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-7, abs=1e-9), k


def test_glm_study_result_is_the_hand_computed_protocol():
    model = mlp()
    loaders = {"train": loader(0), "val": loader(1), "test": loader(2)}
    groups = [group(model, "low", 0, "block", "0", "2"), group(model, "mid", 1, "block", "4"), group(model, "top", 2, "block", "6")]
    res = layerwise_study(model, loaders, groups=groups, predictive="glm", prior=PRIOR, greedy=3,
                          fit_kwargs={"temperature": TEMP}, progress=False)
    fits = {}

    def ref(names):  # a separate fit over the union of the groups `names`: (evidence, {split: GLM probabilities})
        key = tuple(names)
        if key not in fits:
            params = [n for g in groups if g.name in names for n in g.param_names]
            post = bl.fit(model, loaders["train"], "kfac", subset=params, prior_precision=PRIOR, temperature=TEMP, progress=False)
            probs = {s: torch.cat([post.predict(b, method="glm") for b in loaders[s]]).numpy() for s in ("val", "test")}
            fits[key] = (float(post.log_marginal_likelihood()), probs)
        return fits[key]

    ys = {s: loaders[s].dataset.tensors[1].numpy() for s in ("val", "test")}
    with torch.no_grad():
        p_map = {s: torch.softmax(model(loaders[s].dataset.tensors[0]), -1).numpy() for s in ("val", "test")}
    assert set(res) == {"config", "map", "groups", "reference", "greedy"}
    assert res["config"] == {
        "structure": "kfac", "predictive": "glm", "link": "probit", "n_samples": 30, "prior": PRIOR, "seed": 0,
        "train_split": "train", "eval_splits": ["val", "test"], "n_bins": 15,
        "all_groups": [{"name": g.name, "depth": g.depth, "kind": g.kind, "n_params": g.n_params} for g in groups]}
    for s in ("val", "test"):
        assert set(res["map"][s]) == {"metrics", "per_example"}
        assert_metrics(res["map"][s]["metrics"], metrics(p_map[s], ys[s]))

    def check_row(row, label, names, kind):
        gs = [g for g in groups if g.name in names]
        evidence, probs = ref(names)
        assert set(row) == {"name", "depth", "kind", "n_params", "groups", "prior_precision", "log_marglik", "path", "splits"}
        assert (row["name"], row["depth"], row["kind"], row["n_params"], row["groups"]) == (
            label, max(g.depth for g in gs), kind, sum(g.n_params for g in gs), list(names))
        assert row["prior_precision"] == (PRIOR if len(gs) == 1 else {g.name: PRIOR for g in gs})
        assert row["log_marglik"] == pytest.approx(evidence, rel=1e-9)
        assert row["path"] == "glm (probit)"
        for s in ("val", "test"):
            got, p, y = row["splits"][s], probs[s], ys[s]
            assert set(got) == {"map", "bayes", "delta_ece", "delta_nll", "per_example"}
            m, b = metrics(p_map[s], y), metrics(p, y)
            assert_metrics(got["map"], m)
            assert_metrics(got["bayes"], b)
            assert got["delta_ece"] == pytest.approx(m["ece"] - b["ece"], abs=1e-9)
            assert got["delta_nll"] == pytest.approx(m["nll"] - b["nll"], rel=1e-7)
            ex = got["per_example"]
            assert set(ex) == {"p_true", "confidence", "correct"}
            assert ex["p_true"].dtype == np.float32 and ex["confidence"].dtype == np.float32 and ex["correct"].dtype == bool
            np.testing.assert_allclose(ex["p_true"], p[np.arange(len(y)), y], rtol=1e-6)
            np.testing.assert_allclose(ex["confidence"], p.max(1), rtol=1e-6)
            np.testing.assert_array_equal(ex["correct"], p.argmax(1) == y)

    for row, g in zip(res["groups"], groups, strict=True):
        check_row(row, g.name, [g.name], "block")
    assert set(res["reference"]) == {"all", "last_layer"}
    check_row(res["reference"]["all"], "all", ["low", "mid", "top"], "set")
    check_row(res["reference"]["last_layer"], "last_layer", ["top"], "block")  # no head group: the last group

    chosen: list[str] = []  # greedy by brute force: lowest validation ECE of the union, ties to the first
    for step in res["greedy"]:
        eces = {g.name: metrics(ref([n for n in ["low", "mid", "top"] if n in chosen + [g.name]])[1]["val"], ys["val"])["ece"]
                for g in groups if g.name not in chosen}
        best = min(eces, key=lambda n: (eces[n], [g.name for g in groups].index(n)))
        chosen.append(best)
        names = [n for n in ["low", "mid", "top"] if n in chosen]
        keys = {"n_groups", "added", "groups", "select_split", "select_ece", "select_acc", "select_nll", "select_map",
                "splits"}
        assert set(step) - {"warning"} == keys
        assert (step["n_groups"], step["added"], sorted(step["groups"]), step["select_split"]) == (len(chosen), best, sorted(chosen), "val")
        assert step["select_ece"] == pytest.approx(eces[best], abs=1e-9)
        # the selection split's accuracy and NLL of the set and of the MAP, and the warning exactly when they worsen
        sel, sel0 = metrics(ref(names)[1]["val"], ys["val"]), metrics(p_map["val"], ys["val"])
        assert step["select_acc"] == pytest.approx(sel["acc"]) and step["select_nll"] == pytest.approx(sel["nll"], rel=1e-6)
        assert step["select_map"] == pytest.approx({"acc": sel0["acc"], "nll": sel0["nll"]}, rel=1e-6)
        assert ("warning" in step) == (sel["acc"] < sel0["acc"] - 0.05 or sel["nll"] > sel0["nll"])
        for s in ("val", "test"):
            m, b = metrics(p_map[s], ys[s]), metrics(ref(names)[1][s], ys[s])
            assert set(step["splits"][s]) == {"map", "bayes", "delta_ece", "delta_nll"}
            assert_metrics(step["splits"][s]["bayes"], b)
            assert step["splits"][s]["delta_ece"] == pytest.approx(m["ece"] - b["ece"], abs=1e-9)
    assert len(res["greedy"]) == 3  # greedy may take every group


def test_mc_rows_and_maps_are_reported_one_group_at_a_time_then_the_references():
    """Defaults (MC, 30 draws, seed 0, marglik priors, kfac); a head group that is not the last one is the last layer."""
    model = mlp()
    loaders = {"train": loader(0), "test": loader(2)}
    groups = [group(model, "out", 0, "head", "0"), group(model, "mid", 1, "block", "2", "4"), group(model, "top", 2, "block", "6")]
    events = []
    res = layerwise_study(model, loaders, groups=groups, on_row=lambda r: events.append(("row", r["name"])),
                          on_map=lambda m: events.append(("map", sorted(m))), progress=False)
    assert events == [("map", ["test"]), ("row", "out"), ("map", ["test"]), ("row", "mid"), ("map", ["test"]),
                      ("row", "top"), ("map", ["test"])]
    cfg = res["config"]
    assert (cfg["predictive"], cfg["n_samples"], cfg["seed"], cfg["prior"], cfg["structure"], cfg["link"]) == (
        "mc", 30, 0, "marglik", "kfac", "probit")
    last = res["reference"]["last_layer"]
    assert (last["groups"], last["kind"], last["depth"]) == (["out"], "head", 0)
    assert res["reference"]["all"]["groups"] == ["out", "mid", "top"]
    assert all(r["path"].endswith("one draw per forward") for r in res["groups"])
    events.clear()
    layerwise_study(model, loaders, groups=groups, predictive="mc", n_samples=2, prior=PRIOR, references=False,
                    on_map=lambda m: events.append("map"), progress=False)
    assert events == ["map"] * 3  # one per group, no call for the (absent) references


def test_glm_without_rows_still_reports_the_map_block_and_without_references_reports_the_groups():
    model = mlp()
    loaders = {"train": loader(0), "test": loader(2)}
    maps = []
    res = layerwise_study(model, loaders, predictive="glm", prior=PRIOR, skip=["0", "2", "4", "6"], references=False,
                          on_map=maps.append, progress=False)
    assert maps == [] and res["groups"] == [] and res["reference"] == {} and res["greedy"] == []
    y = loaders["test"].dataset.tensors[1].numpy()
    with torch.no_grad():
        p = torch.softmax(model(loaders["test"].dataset.tensors[0]), -1).numpy()
    assert set(res["map"]) == {"test"} and set(res["map"]["test"]) == {"metrics", "per_example"}
    assert_metrics(res["map"]["test"]["metrics"], metrics(p, y))
    np.testing.assert_allclose(res["map"]["test"]["per_example"]["p_true"], p[np.arange(len(y)), y], rtol=1e-6)
    res = layerwise_study(model, loaders, structure="diag", predictive="glm", prior=PRIOR, only=["6"], references=False,
                          progress=False)
    assert [r["name"] for r in res["groups"]] == ["6"] and res["reference"] == {}
    alone = bl.fit(model, loaders["train"], "diag", subset=["6.weight", "6.bias"], prior_precision=PRIOR, progress=False)
    assert res["groups"][0]["log_marglik"] == pytest.approx(float(alone.log_marginal_likelihood()), rel=1e-9)


def test_progress_false_is_quiet_whatever_the_environment_says(monkeypatch, capsys):
    monkeypatch.setenv("BAYESPEFT_PROGRESS", "bar")  # applies only where progress is None
    model = mlp()
    layerwise_study(model, {"train": loader(0), "test": loader(2)}, predictive="mc", n_samples=2, prior=PRIOR,
                    only=["6"], references=False, progress=False)
    assert capsys.readouterr().err == ""


def test_greedy_must_be_a_positive_int_not_a_bool():
    model = mlp()
    with pytest.raises(ValueError, match=r"^greedy must be a positive number of groups, got True$"):
        layerwise_study(model, {"train": loader(0), "val": loader(1)}, greedy=True, progress=False)
