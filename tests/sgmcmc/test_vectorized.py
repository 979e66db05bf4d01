"""Vectorised chains (``sgmcmc.vectorize_chains``): K chains' gradients in one ``vmap`` call, each chain's own update.

* Gaussian target: each of 4 batched chains (every coordinate an independent copy of a correlated 3-d Gaussian, as
  in test_gaussian.py) matches (μ, TΣ); the chains are uncorrelated with each other; and each batched chain equals
  the sequential chain of the same seed.
* ``run_chains``: the batched run equals the sequential run (samples, diagnostics, reports, resume files, the global
  RNG left behind) with a shuffled, augmenting loader; an interrupted batched run resumes (one chain at a time) to
  the uninterrupted run; SAM samplers and models vmap cannot run fall back with the reason logged.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from safetensors import safe_open
from torch import nn

from bayespeft.sgmcmc import SampleStore, SamplerConfig, build, run_chains
from bayespeft.sgmcmc.vectorized import PrecomputedLogProb, StackedGradient, step_together

_spec = importlib.util.spec_from_file_location("_sgmcmc_resume_helpers", Path(__file__).with_name("test_resume.py"))
_resume = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_resume)  # its loader, model and kill helpers (tests run with --import-mode=importlib)
Killed, kill_after_add, kill_at_batch, setup = _resume.Killed, _resume.kill_after_add, _resume.kill_at_batch, _resume.setup

torch.set_num_threads(1)

MU = torch.tensor([1.0, -2.0, 0.5])
SIGMA = torch.tensor([[1.0, 0.6, 0.2], [0.6, 1.5, -0.3], [0.2, -0.3, 0.8]])
PREC = torch.linalg.inv(SIGMA)
LAM_MAX = float(torch.linalg.eigvalsh(PREC).max())
SAMPLERS = {"sgld": ({}, 0.04), "psgld": ({"alpha": 0.999}, 0.04), "asgld": ({"a": 0.02}, 0.04),
            "sghmc": ({"friction": 0.3}, 0.01)}


def gauss_log_prob(theta, batch):
    d = theta - MU
    return -0.5 * ((d @ PREC) * d).sum()


@pytest.mark.parametrize("name", ["sgld", "sghmc"])  # the update code is each sampler's own (test_gaussian.py)
def test_batched_chains_sample_the_gaussian_independently_and_equal_sequential_chains(name):
    """Tolerance as test_gaussian.py: per chain, mean within 0.06 and covariance within 8% (relative Frobenius) of
    (μ, TΣ) from 400 copies x 120 draws; cross-chain correlation |r| < 0.05 (400 independent copies x 60 draws)."""
    K, M, T, steps, burn = 4, 400, 0.7, 1000, 400
    opts, frac = SAMPLERS[name]
    lr = frac / LAM_MAX
    pre = PrecomputedLogProb()
    stepper = build(name, pre, lr=lr, temperature=T, **opts)
    starts = [MU + torch.randn(M, 3, generator=torch.Generator().manual_seed(9 + c)) for c in range(K)]
    states = [stepper.init(starts[c], seed=100 + c) for c in range(K)]
    grad = StackedGradient(gauss_log_prob)
    draws = []
    for t in range(steps):
        states = step_together(stepper, pre, grad, states, [torch.zeros(1)] * K)
        if t >= burn:
            draws.append(torch.stack([s.params.detach().clone() for s in states]))
    x = torch.stack(draws).double()  # (draws, K, M, 3)
    for c in range(K):
        xc = x[::5, c].reshape(-1, 3)
        assert (xc.mean(0) - MU.double()).abs().max() < 0.06
        cov = torch.cov(xc.T)
        assert torch.linalg.norm(cov - T * SIGMA.double()) / torch.linalg.norm(T * SIGMA.double()) < 0.08
    # chains a, b: correlation of the same coordinate of the same copy at the same step, over copies and draws
    r = torch.corrcoef(x[::10, :, :, 0].permute(1, 0, 2).reshape(K, -1))
    off = r[~torch.eye(K, dtype=torch.bool)]
    assert off.abs().max() < 0.05, r
    # chain 2 batched == chain 2 alone with the same seed and start (same noise, same update)
    ref = build(name, gauss_log_prob, lr=lr, temperature=T, **opts)
    s = ref.init(starts[2], seed=102)
    for _ in range(steps):
        s = ref.step(s, None)
    torch.testing.assert_close(s.params, states[2].params, rtol=1e-4, atol=1e-4)


def resume_files(store: SampleStore) -> dict:
    out = {}
    for f in sorted((store.root / "resume").glob("chain*.safetensors")):
        with safe_open(str(f), "pt") as h:
            meta = json.loads(h.metadata()["state"])
            out[f.name] = ({k: h.get_tensor(k) for k in h.keys()}, {k: v for k, v in meta.items() if k != "rng"},
                           meta["rng"])
    return out


@pytest.mark.parametrize(("sampler", "n_data"), [(s, 40) for s in sorted(SAMPLERS)] + [("sgld", 48)])
def test_vectorised_run_equals_sequential_run(tmp_path, caplog, sampler, n_data):
    """``n_data = 48`` (3 full batches of 16): each epoch of a sequential chain ends with the ``next()`` that stops
    its loop, where ``RandomSampler`` draws once more from the loader's generator; the vectorised chains must too."""
    runs = {}
    for vec in (False, True):
        model, loader, sc = setup(sampler, vectorize_chains=vec, n_chains=3, n_data=n_data)
        with caplog.at_level(logging.INFO, logger="bayespeft.sgmcmc.runner"):
            res = run_chains(model, loader, sc, store=tmp_path / str(vec))
        runs[vec] = res, torch.get_rng_state(), loader.generator.get_state()
    assert "chains [0, 1, 2] run as one vectorised computation" in caplog.text
    (seq, rng_s, gen_s), (vec, rng_v, gen_v) = runs[False], runs[True]
    (sa, ra), (sb, rb) = [(sorted(((e["chain"], e["step"]), s.load(i)) for i, e in enumerate(s.entries)),
                           sorted(s.diagnostic_records(), key=lambda r: (r["chain"], r["draw"])))
                          for s in (seq.store, vec.store)]
    assert [k for k, _ in sa] == [k for k, _ in sb] and len(sa) == 12
    for (_, ta), (_, tb) in zip(sa, sb):
        for k in ta:
            torch.testing.assert_close(tb[k], ta[k], rtol=1e-5, atol=1e-6)
    assert len(ra) == len(rb) and all(x["loglik"] == pytest.approx(y["loglik"], abs=1e-5) for x, y in zip(ra, rb))
    assert [vars(r) for r in vec.chains] == [vars(r) for r in seq.chains]
    assert torch.equal(rng_s, rng_v) and torch.equal(gen_s, gen_v)  # the RNGs end where the sequential run left them
    fs, fv = resume_files(seq.store), resume_files(vec.store)
    assert fs.keys() == fv.keys() and len(fs) == 3
    for name in fs:
        (ts, ms, js), (tv, mv, jv) = fs[name], fv[name]
        assert ms == mv and js == jv
        for k in ts:
            if k.startswith("rng/"):
                assert torch.equal(ts[k], tv[k]), (name, k)
            else:
                torch.testing.assert_close(tv[k], ts[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kill", [lambda mp: kill_at_batch(mp, 14), lambda mp: kill_after_add(mp, 5)],
                         ids=["mid-run", "between-sample-and-state"])
def test_interrupted_vectorised_run_resumes_one_chain_at_a_time(tmp_path, monkeypatch, caplog, kill):
    model, loader, sc = setup("sghmc")
    ref = run_chains(model, loader, sc, store=tmp_path / "ref")
    model, loader, sc = setup("sghmc", vectorize_chains=True)
    with monkeypatch.context() as mp:
        kill(mp)
        with pytest.raises(Killed):
            run_chains(model, loader, sc, store=tmp_path / "cut")
    assert SampleStore(tmp_path / "cut").completeness()["complete"] is False
    model, loader, sc = setup("sghmc", vectorize_chains=True)
    with caplog.at_level(logging.INFO, logger="bayespeft.sgmcmc.runner"):
        res = run_chains(model, loader, sc, store=tmp_path / "cut", resume=True)
    assert "one at a time: resume continues the chains one at a time" in caplog.text
    cut = SampleStore(tmp_path / "cut")
    assert cut.completeness()["complete"] is True
    assert [vars(r) for r in res.chains] == [vars(r) for r in ref.chains]
    a = sorted(((e["chain"], e["step"]), cut.load(i)) for i, e in enumerate(cut.entries))
    b = sorted(((e["chain"], e["step"]), ref.store.load(i)) for i, e in enumerate(ref.store.entries))
    assert [k for k, _ in a] == [k for k, _ in b]
    for (_, ta), (_, tb) in zip(a, b):
        for k in ta:
            torch.testing.assert_close(ta[k], tb[k], rtol=1e-5, atol=1e-6)


class ItemInForward(nn.Module):
    """``.item()`` in the forward: fine eagerly, impossible under vmap."""

    def __init__(self):
        super().__init__()
        self.net = nn.Linear(4, 3)

    def forward(self, features):
        return self.net(features) * (1.0 + 0.0 * float(features.abs().max().item()))


def test_fallbacks_are_logged_and_explicit_true_is_checked(tmp_path, caplog):
    model, loader, sc = setup("sam_sgld", vectorize_chains="auto")
    with caplog.at_level(logging.INFO, logger="bayespeft.sgmcmc.runner"):
        run_chains(model, loader, sc, store=tmp_path / "sam")
    assert "one at a time: sampler 'sam_sgld' is not elementwise" in caplog.text
    assert {r.levelname for r in caplog.records if "one at a time" in r.getMessage()} == {"INFO"}  # "auto": allowed
    with pytest.raises(ValidationError, match="vectorize_chains: true needs an elementwise sampler"):
        SamplerConfig(sampler="sam_sgld_r1", vectorize_chains=True)
    with pytest.raises(ValidationError, match="vectorize_chains"):
        SamplerConfig(vectorize_chains="sometimes")
    _, loader, sc = setup("sgld", vectorize_chains="auto", epochs=2)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bayespeft.sgmcmc.runner"):
        res = run_chains(ItemInForward(), loader, sc, store=tmp_path / "item")
    assert "one at a time: torch.func.vmap cannot run this model/batch" in caplog.text
    assert {r.levelname for r in caplog.records if "one at a time" in r.getMessage()} == {"WARNING"}  # a surprise
    assert [r.n_samples for r in res.chains] == [1, 1]  # steps 4-6, burn-in 3, thin 2
    _, loader, sc = setup("sgld", vectorize_chains=True, epochs=2)
    with pytest.raises(ValueError, match="vectorize_chains is true but torch.func.vmap cannot run"):
        run_chains(ItemInForward(), loader, sc, store=tmp_path / "item_true")
