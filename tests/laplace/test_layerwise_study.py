"""The layer-wise protocol: rows checked against hand-computed metrics; greedy selection never looks at the test split."""

from __future__ import annotations

import functools
import importlib.util
import pathlib

import numpy as np
import pytest
import torch

from bayespeft.laplace.layerwise_study import layerwise_study

_spec = importlib.util.spec_from_file_location("lw_helpers", pathlib.Path(__file__).with_name("test_layerwise.py"))
lwt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lwt)


def ece_by_hand(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE, bins [i/M, (i+1)/M) with the last bin closed."""
    conf, pred = probs.max(1), probs.argmax(1)
    idx = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        m = idx == b
        if m.any():
            total += m.sum() / len(conf) * abs((pred[m] == labels[m]).mean() - conf[m].mean())
    return float(total)


def permuted(loader, seed: int):
    X, y = loader.dataset.tensors
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))]
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=loader.batch_size)


@functools.lru_cache(maxsize=None)
def glm_study():
    model = lwt.lora_model()
    loaders = {"train": lwt.data(model, n=24, seed=1), "val": lwt.data(model, n=30, seed=2), "test": lwt.data(model, n=30, seed=3)}
    return model, loaders, layerwise_study(model, loaders, predictive="glm", progress=False, fit_kwargs={"prior_precision": 1.0})


def test_rows_hold_the_hand_computed_metrics_of_each_groups_predictive():
    model, loaders, res = glm_study()
    assert [r["name"] for r in res["groups"]] == ["blocks.0", "blocks.1", "head"]
    assert [r["depth"] for r in res["groups"]] == [0, 1, 3]
    assert res["config"]["eval_splits"] == ["val", "test"]
    lw = lwt.LayerwiseLaplace.fit(model, loaders["train"], "block", structure="kfac", progress=False)
    lw.tune_priors("marglik")
    rows = {r["name"]: r for r in res["groups"]}
    rows["all"], rows["last_layer"] = res["reference"]["all"], res["reference"]["last_layer"]
    sets = {"blocks.0": ["blocks.0"], "blocks.1": ["blocks.1"], "head": ["head"], "all": lw.names, "last_layer": ["head"]}
    for split in ("val", "test"):
        X, y = loaders[split].dataset.tensors
        with torch.no_grad():
            p_map = torch.softmax(model(X), -1).double().numpy()
        yn = y.numpy()
        np.testing.assert_allclose(res["map"][split]["metrics"]["ece"], ece_by_hand(p_map, yn), atol=1e-6)
        for label, names in sets.items():
            post = lw.posterior_of(names)
            p = torch.cat([post.predict(b, method="glm") for b in loaders[split]]).double().numpy()
            row = rows[label]["splits"][split]
            nll_map = -np.log(p_map[np.arange(len(yn)), yn]).mean()
            nll_bayes = -np.log(p[np.arange(len(yn)), yn]).mean()
            np.testing.assert_allclose(row["bayes"]["ece"], ece_by_hand(p, yn), atol=1e-5)
            np.testing.assert_allclose(row["delta_ece"], ece_by_hand(p_map, yn) - ece_by_hand(p, yn), atol=1e-5)
            np.testing.assert_allclose(row["delta_nll"], nll_map - nll_bayes, rtol=1e-5)
            np.testing.assert_allclose(row["bayes"]["acc"], (p.argmax(1) == yn).mean())
            onehot = np.eye(3)[yn]
            np.testing.assert_allclose(row["bayes"]["brier"], ((p - onehot) ** 2).sum(1).mean(), rtol=1e-5)
            ex = row["per_example"]
            np.testing.assert_allclose(ex["p_true"], p[np.arange(len(yn)), yn], rtol=1e-5)
            np.testing.assert_allclose(ex["confidence"], p.max(1), rtol=1e-5)
            assert ex["correct"].dtype == bool and (ex["correct"] == (p.argmax(1) == yn)).all()
        assert rows["head"]["prior_precision"] == pytest.approx(lw.prior_precision["head"], rel=1e-5)


def test_glm_groups_and_reference_rows_come_from_one_pass_of_output_gradients_per_batch(monkeypatch):
    """The groups and the reference rows ('all', 'last_layer') share one Jacobian pass per batch, and give the
    numbers of two separate passes (groups; reference sets)."""
    from bayespeft.laplace.kfac import KfacStructure

    model, loaders, _ = glm_study()
    real, calls = KfacStructure.glm_cov_parts, []

    def counting(self, *args, **kwargs):
        calls.append(len(args[-1]))  # the number of parts of this pass
        return real(self, *args, **kwargs)

    monkeypatch.setattr(KfacStructure, "glm_cov_parts", counting)
    res = layerwise_study(model, loaders, predictive="glm", progress=False, fit_kwargs={"prior_precision": 1.0})
    n_batches = sum(len(loaders[s]) for s in ("val", "test"))
    assert calls == [3] * n_batches  # one pass per batch, over the 3 groups; no second pass for the references
    lw = lwt.LayerwiseLaplace.fit(model, loaders["train"], "block", structure="kfac", progress=False)
    lw.tune_priors("marglik")
    rows = res["groups"] + [res["reference"]["all"], res["reference"]["last_layer"]]
    sets = [[n] for n in lw.names] + [lw.names, ["head"]]
    for split in ("val", "test"):
        y = loaders[split].dataset.tensors[1].numpy()
        for row, names in zip(rows, sets):  # each set's own posterior, its own Jacobian pass
            post = lw.posterior_of(names)
            p = torch.cat([post.predict(b, method="glm") for b in loaders[split]]).numpy()
            np.testing.assert_allclose(row["splits"][split]["per_example"]["p_true"], p[np.arange(len(y)), y], rtol=1e-5)


def greedy_order_by(lw, loader, k: int) -> list[str]:
    """Forward selection by ECE on ``loader``, by brute force over the union posteriors."""
    chosen: list[str] = []
    for _ in range(k):
        scores = {}
        for g in [n for n in lw.names if n not in chosen]:
            post = lw.posterior_of(chosen + [g])
            probs = torch.cat([post.predict(b, method="glm") for b in loader])
            scores[g] = ece_by_hand(probs.double().numpy(), loader.dataset.tensors[1].numpy())
        chosen.append(min(scores, key=lambda g: (scores[g], lw.names.index(g))))
    return chosen


def test_greedy_selection_follows_the_validation_split_and_never_the_test_split():
    model, loaders, _ = glm_study()
    lw = lwt.LayerwiseLaplace.fit(model, loaders["train"], "block", structure="kfac", progress=False)
    lw.tune_priors("marglik")
    by_val = greedy_order_by(lw, loaders["val"], 2)
    # the design: test splits (labels permuted; seeds picked so) on which choosing by test gives other orders
    tests = [permuted(loaders["test"], 1), permuted(loaders["test"], 2)]
    assert all(greedy_order_by(lw, t, 2) != by_val for t in tests)
    orders = []
    for t in tests:
        res = layerwise_study(model, {**loaders, "test": t}, predictive="glm", greedy=2, references=False, only=["head"], progress=False)
        steps = res["greedy"]
        orders.append([s["added"] for s in steps])
        assert [s["groups"] for s in steps] == [by_val[:1], by_val[:2]]
        assert steps[1]["splits"]["test"]["bayes"]["ece"] == pytest.approx(
            ece_by_hand(torch.cat([lw.posterior_of(by_val).predict(b, method="glm") for b in t]).double().numpy(), t.dataset.tensors[1].numpy()),
            abs=1e-5,
        )
    assert orders[0] == orders[1] == by_val


def test_mc_rows_arrive_one_group_at_a_time_and_skipped_groups_are_not_redone():
    model = lwt.lora_model()
    loaders = {"train": lwt.data(model, n=8, seed=1), "test": lwt.data(model, n=8, seed=3)}
    seen = []
    res = layerwise_study(model, loaders, predictive="mc", n_samples=3, skip=["blocks.0"], references=False,
                          on_row=lambda r: seen.append((r["name"], r["path"].split(" ")[0])), progress=False)
    assert seen == [("blocks.1", "cached-prefix"), ("head", "cached-prefix")]
    assert [r["name"] for r in res["groups"]] == ["blocks.1", "head"] and res["reference"] == {}


def test_bad_protocol_arguments_name_what_is_wrong():
    model = lwt.lora_model()
    tr, te = lwt.data(model, n=4), lwt.data(model, n=4, seed=2)
    with pytest.raises(ValueError, match="no 'train' split"):
        layerwise_study(model, {"test": te})
    with pytest.raises(ValueError, match="at least one split to evaluate"):
        layerwise_study(model, {"train": tr})
    with pytest.raises(ValueError, match="greedy selection needs a 'val' split"):
        layerwise_study(model, {"train": tr, "test": te}, greedy=1)
    with pytest.raises(ValueError, match="greedy must be a positive number"):
        layerwise_study(model, {"train": tr, "val": te}, greedy=0)
    with pytest.raises(ValueError, match=r"greedy=4 but there are only 3 groups"):
        layerwise_study(model, {"train": tr, "val": te}, greedy=4, progress=False)
    with pytest.raises(ValueError, match="available groups"):
        layerwise_study(model, {"train": tr, "val": te}, only=["blocks.5"], progress=False)
    with pytest.raises(ValueError, match="n_samples must be a positive integer"):
        layerwise_study(model, {"train": tr, "val": te}, n_samples=-1, progress=False)


@pytest.mark.parametrize("predictive", ["mc", "glm"])
def test_stages_without_rows_are_announced(predictive):
    """`on_stage` hears of each stage that reports no row (MC reference rows, each greedy step) before it runs:
    `bayespeft layerwise` printed nothing there for tens of seconds. GLM computes the references with the groups."""
    model = lwt.lora_model()
    loaders = {"train": lwt.data(model, n=16, seed=1), "val": lwt.data(model, n=16, seed=2),
               "test": lwt.data(model, n=16, seed=3)}
    said: list[str] = []
    res = layerwise_study(model, loaders, predictive=predictive, n_samples=2, greedy=2, progress=False,
                          fit_kwargs={"prior_precision": 1.0}, on_stage=said.append)
    n = len(res["config"]["all_groups"])
    refs = ["reference rows: all, last_layer (mc predictive)"] if predictive == "mc" else []
    assert said == refs + [f"greedy step 1/2: {n} candidate set(s) scored on val",
                           f"greedy step 2/2: {n - 1} candidate set(s) scored on val"]
    assert [s["n_groups"] for s in res["greedy"]] == [1, 2]


def test_a_greedy_step_that_buys_ece_with_accuracy_is_flagged(caplog):
    """ECE alone rewards a uniformly unsure predictor: on 8 examples the MAP is right on 6 with confidence 0.9 (ECE
    0.15), a collapsed set predicts (0.55, 0.45) everywhere (right on 4: accuracy 0.5, ECE 0.05). The step records
    accuracy and NLL on the selection split for the set and the MAP, and the collapse is a logged warning."""
    from bayespeft.laplace.layerwise_study import selection_check

    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    map_probs = torch.tensor([[0.9, 0.1]] * 4 + [[0.1, 0.9]] * 2 + [[0.9, 0.1]] * 2)
    flat = torch.tensor([[0.55, 0.45]] * 8)
    with caplog.at_level("WARNING", logger="bayespeft"):
        out = selection_check(map_probs, flat, y, ["blocks.0", "blocks.1"], "val")
    assert out["select_acc"] == 0.5 and out["select_map"]["acc"] == 0.75
    assert out["select_nll"] == pytest.approx(-(4 * np.log(0.55) + 4 * np.log(0.45)) / 8)
    assert out["select_map"]["nll"] == pytest.approx(-(6 * np.log(0.9) + 2 * np.log(0.1)) / 8)
    # NLL: MAP (6 ln(1/0.9) + 2 ln(1/0.1)) / 8 = 0.6547, flat (4 ln(1/0.55) + 4 ln(1/0.45)) / 8 = 0.6982
    assert out["warning"] == ("greedy step 2 (blocks.0+blocks.1) lowers the val ECE but worsens accuracy 0.750 -> "
                              "0.500 and NLL 0.655 -> 0.698 against the MAP; prefer fewer groups or another prior")
    assert [r.getMessage() for r in caplog.records] == [out["warning"]]
    caplog.clear()
    softer = torch.tensor([[0.8, 0.2]] * 4 + [[0.2, 0.8]] * 2 + [[0.8, 0.2]] * 2)  # same accuracy, lower NLL
    out = selection_check(map_probs, softer, y, ["head"], "val")
    assert "warning" not in out and out["select_acc"] == 0.75 and not caplog.records
