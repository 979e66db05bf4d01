"""Model path on a tiny MLP classifier: run_chains, sample store, ensemble prediction, divergence, config checks."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError
from safetensors import safe_open
from torch import nn
from torch.func import functional_call
from torch.utils.data import DataLoader, Dataset

from bayespeft.sgmcmc import SampleStore, SamplerConfig, ensemble_predict, model_log_prob, predict_sample, run_chains
from bayespeft.sgmcmc.schedules import Cyclical

torch.set_num_threads(1)


class TinyMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, features):
        return self.head(torch.tanh(self.body(features)))


class Blobs(Dataset):
    def __init__(self, n=48, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % 3
        self.x = torch.randn(n, 4, generator=g) + 2.0 * nn.functional.one_hot(self.y, 4).float()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"features": self.x[i], "labels": self.y[i]}


def make_model():
    torch.manual_seed(0)
    m = TinyMLP()
    m.body.bias.requires_grad_(False)  # a frozen tensor that must never reach the store
    return m


def loader(shuffle=False):
    return DataLoader(Blobs(), batch_size=16, shuffle=shuffle)


def cfg(**kw):
    base = dict(sampler="sgld", lr=2e-3, epochs=4, burn_in_epochs=1, thin=2, n_chains=2, n_projections=2, probe_size=16)
    base.update(kw)
    return SamplerConfig(**base)


def test_log_prob_is_n_scaled_loglik_plus_prior():
    m = make_model()
    lp = model_log_prob(m, n_data=48, prior_std=2.0)
    batch = next(iter(loader()))
    params = {n: p for n, p in m.named_parameters() if p.requires_grad}
    logits = m(batch["features"])
    loglik = torch.log_softmax(logits, -1).gather(1, batch["labels"][:, None]).mean()
    prior = sum(torch.distributions.Normal(0.0, 2.0).log_prob(p).sum() for p in params.values())
    torch.testing.assert_close(lp(params, batch), 48 * loglik + prior)


def test_run_chains_store_and_ensemble(tmp_path):
    m = make_model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    res = run_chains(m, loader(), cfg(), store=tmp_path / "s")
    # 4 epochs x 3 steps = 12 steps, burn-in 3, thin 2 -> steps 5, 7, 9, 11 -> 4 per chain
    assert [r.n_samples for r in res.chains] == [4, 4] and not res.diverged
    store = SampleStore(tmp_path / "s")
    assert len(store) == 8 and [e["step"] for e in store.entries[:4]] == [5, 7, 9, 11]
    trainable = {"body.weight", "head.weight", "head.bias"}
    n_bytes = 0
    for e in store.entries:
        with safe_open(str(store.root / e["file"]), "pt") as f:
            assert set(f.keys()) == trainable
            n_bytes += sum(f.get_tensor(k).numel() * 4 for k in f.keys())
    header = store.nbytes() - n_bytes
    assert 0 < header < 400 * len(store)  # only the trainable tensors (+ a small JSON header) on disk
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())  # model untouched
    assert set(res.diagnostics) >= {"loglik", "param_norm", "proj_0", "proj_1", "true_class_prob"}
    assert res.diagnostics["true_class_prob"].shape == (2, 4, 16)
    assert json.loads((store.root / "samples.jsonl").read_text().splitlines()[0])["chain"] == 0
    reopened = SampleStore(store.root)  # the append-only log restores every entry
    assert reopened.entries == store.entries and len(reopened) == len(store)

    test = loader()
    probs = ensemble_predict(m, store, test)
    manual = []
    for sample in store:
        full = {**dict(m.named_parameters()), **sample}
        manual.append(torch.cat([functional_call(m, full, (b["features"],)).softmax(-1) for b in test]))
    torch.testing.assert_close(probs, torch.stack(manual).mean(0))
    assert not torch.allclose(manual[0], manual[-1])  # the samples really differ
    torch.testing.assert_close(predict_sample(m, store.load(3), test), manual[3])
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())  # MAP restored


def test_divergent_chain_is_reported_and_others_continue(tmp_path):
    m = make_model()
    bad = run_chains(m, loader(), cfg(lr=50.0, burn_in_epochs=0, thin=1, divergence_check_every=1), store=tmp_path,
                     chain_ids=[0])
    assert bad.diverged == [0] and "NaN" in bad.chains[0].reason
    good = run_chains(m, loader(), cfg(), store=tmp_path, chain_ids=[1])
    assert good.diverged == [] and good.chains[0].n_samples == 4
    store = SampleStore(tmp_path)
    assert "0" in store.diverged
    for i in store.indices(chain=1):
        assert all(torch.isfinite(t).all() for t in store.load(i).values())
    for i in store.indices(chain=0):  # samples saved before the divergence stay loadable and finite
        assert all(torch.isfinite(t).all() for t in store.load(i).values())
    assert set(good.diagnostics["loglik"].shape) == {1, 4}  # diagnostics exclude the diverged chain


def test_cyclical_keeps_only_sampling_phase(tmp_path):
    c = cfg(schedule="cyclical", cycles=2, exploration_fraction=0.5, burn_in_epochs=0, thin=1, epochs=4, n_chains=1)
    res = run_chains(make_model(), loader(), c, store=tmp_path)
    sched = Cyclical(lr0=c.lr, total_steps=12, cycles=2, exploration_fraction=0.5)
    steps = [e["step"] for e in res.store.entries]
    assert steps == [t + 1 for t in range(12) if sched.sampling(t)] == [4, 5, 6, 10, 11, 12]


@pytest.mark.parametrize("kw,match", [
    ({"temperature": 0.0}, "temperature must be a finite number > 0"),
    ({"temperature": -1.0}, "cold posterior"),
    ({"lr": 0.0}, "lr must be a finite number > 0"),
    ({"cycles": 0}, "cycles must be an integer >= 1"),
    ({"burn_in_epochs": 4}, r"burn_in_epochs must satisfy 0 <= burn_in_epochs < epochs \(4\)"),
    ({"thin": 0}, "thin must be an integer >= 1"),
    ({"sampler": "sgdl"}, "unknown sampler 'sgdl'. Did you mean 'sgld'"),
    ({"sampler": "sghmc", "options": {"momentum": 0.9}}, r"no option\(s\) \['momentum'\]; allowed options: \['friction'"),
    ({"sampler": "sghmc", "options": {"friction": 1.5}}, r"friction must lie in \(0, 1\]"),
    ({"exploration_fraction": 1.0}, r"exploration_fraction must lie in \[0, 1\)"),
    ({"poly_gamma": 1.5}, r"poly_gamma must lie in \(0, 1\]"),
])
def test_config_validation_messages(kw, match):
    with pytest.raises(ValidationError, match=match):
        cfg(**kw)
