"""The orchestration of ``run_chains`` (tests/MUTATION.md, "sgmcmc/runner.py, fifth pass").

The run tests compare a resumed run with an uninterrupted one and a vectorised run with a sequential one, each at
its end; these check what happens on the way and what was not compared:

* one SGLD step of ``run_chains`` against the formula of :mod:`bayespeft.sgmcmc.sgld` with the configured prior
  (σ, centre), ``n_data``, temperature and ``n_chains``, and the probe diagnostics of the kept samples against the
  formulas of :mod:`bayespeft.sgmcmc.probe` on an explicit probe batch;
* every resume-state write (status, draws, position, RNG snapshots) of a sequential and a vectorised run against
  the rules of :mod:`bayespeft.sgmcmc.resume` / :mod:`bayespeft.sgmcmc.runner`;
* divergence bookkeeping with a scripted sampler whose log_prob / parameters turn non-finite at chosen steps, one
  chain at a time and in lockstep (and the probe asked once per kept step in lockstep);
* the progress lines, the store's ``plan`` metadata and the refusals.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import re
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import bayespeft.progress
from bayespeft.sgmcmc import SampleStore, SamplerConfig, run_chains
from bayespeft.sgmcmc import runner as runner_mod
from bayespeft.sgmcmc.base import Sampler, init_state
from bayespeft.sgmcmc.runner import ChainReport, ChainWalker, chain_schedule
from bayespeft.sgmcmc.vectorized import PrecomputedLogProb

_spec = importlib.util.spec_from_file_location("_sgmcmc_resume_helpers2", Path(__file__).with_name("test_resume.py"))
_resume = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_resume)  # its augmenting, shuffled loader and model (tests run with --import-mode=importlib)
setup, Killed = _resume.setup, _resume.Killed

torch.set_num_threads(1)

DIVERGED = "non-finite log_prob or parameters (NaN/Inf)"


# ---- one step against the SGLD formula, probe diagnostics against the probe formulas --------------------------------
def tiny_problem():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(6, 2, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    probe = (torch.randn(4, 2, generator=g, dtype=torch.float64), torch.tensor([2, 2, 1, 0]))
    torch.manual_seed(0)
    return nn.Linear(2, 3).double(), DataLoader(TensorDataset(x, y), batch_size=6), (x, y), probe


def test_sgld_steps_use_the_configured_prior_n_data_temperature_and_probe(tmp_path):
    model, loader, (x, y), probe = tiny_problem()
    lr, T, sigma, n_data, seed = 5e-3, 0.5, 0.5, 50, 3
    cfg = SamplerConfig(sampler="sgld", lr=lr, temperature=T, prior_std=sigma, prior_center="init", epochs=2,
                        burn_in_epochs=0, thin=1, n_chains=3, seed=seed, n_projections=3, probe_size=6)
    res = run_chains(model, loader, cfg, n_chains=1, store=tmp_path / "s", probe=probe, n_data=n_data)
    assert [vars(r) for r in res.chains] == [vars(ChainReport(0, seed, 2, 2))] and res.store.chains() == [0]
    w0, b0 = model.weight.detach().clone(), model.bias.detach().clone()

    def log_post(w, b):  # N · mean_i log softmax(W x_i + b)_{y_i} − ‖θ − θ0‖² / (2σ²)
        ll = torch.log_softmax(x @ w.T + b, -1)[torch.arange(6), y].mean()
        return n_data * ll - (((w - w0) ** 2).sum() + ((b - b0) ** 2).sum()) / (2 * sigma**2)

    g = torch.Generator().manual_seed(seed + 0)  # chain 0's noise: one flat N(0, 1) buffer (weight, bias) per step
    w, b, want = w0, b0, []
    for _ in range(2):  # θ ← θ + ε ∇log_prob(θ) + sqrt(2 ε T) ξ
        gw, gb = torch.func.grad(log_post, argnums=(0, 1))(w, b)
        xi = torch.empty(9, dtype=torch.float64).normal_(generator=g)
        w = w + lr * gw + math.sqrt(2 * lr * T) * xi[:6].reshape(3, 2)
        b = b + lr * gb + math.sqrt(2 * lr * T) * xi[6:]
        want.append((w, b))
    recs = sorted(res.store.diagnostic_records(), key=lambda r: r["draw"])
    for i, ((w, b), rec) in enumerate(zip(want, recs)):
        got = res.store.load(i)
        torch.testing.assert_close(got["weight"], w, rtol=0, atol=1e-6)
        torch.testing.assert_close(got["bias"], b, rtol=0, atol=1e-6)
        # probe: loglik, ‖θ‖, ⟨d_k, θ⟩ with d_k ~ N(0, I_P)/sqrt(P) seeded (seed·1000003 + k), p(y|x) per point
        flat = torch.cat([got["weight"].reshape(-1), got["bias"]]).float()
        logp = torch.log_softmax(probe[0] @ got["weight"].T + got["bias"], -1)[torch.arange(4), probe[1]]
        dirs = [torch.randn(9, generator=torch.Generator().manual_seed(seed * 1_000_003 + k)) / 3.0 for k in range(3)]
        assert set(rec) == {"chain", "draw", "loglik", "param_norm", "proj_0", "proj_1", "proj_2", "true_class_prob"}
        assert rec["loglik"] == pytest.approx(float(logp.mean()), rel=1e-5)
        assert rec["param_norm"] == pytest.approx(float(flat.norm()), rel=1e-5)
        proj = [float(d @ flat) for d in dirs]
        assert [rec[f"proj_{k}"] for k in range(3)] == pytest.approx(proj, rel=1e-4, abs=1e-6)
        assert rec["true_class_prob"] == pytest.approx(logp.exp().tolist(), rel=1e-5)


# ---- every resume-state write of a sequential and a vectorised run ------------------------------------------------
def record_writes(monkeypatch) -> list:
    writes, real = [], SampleStore.save_chain_state

    def save(self, chain, tensors, metadata):
        state = json.loads(metadata["state"])
        writes.append((chain, {k: v.clone() for k, v in tensors.items()}, state.pop("rng"), state))
        return real(self, chain, tensors, metadata)

    monkeypatch.setattr(SampleStore, "save_chain_state", save)
    return writes


def expected_states(chain: int, seed: int) -> list[dict]:
    """12 steps (4 epochs x 3 batches), burn-in 3, thin 1, cyclical with 2 cycles of 6 steps and exploration 1/4:
    step s is kept when s > 3 and its schedule index s − 1 is a sampling step ((s − 1) % 6 >= 2). A write at the
    start, after every kept sample (epoch and batches consumed of that step) and at the end."""
    kept = [s for s in range(4, 13) if (s - 1) % 6 >= 2]
    assert kept == [4, 5, 6, 9, 10, 11, 12]

    def st(status, draws, epoch, consumed, step):
        return {"chain": chain, "seed": seed + chain, "status": status, "draws": draws, "epoch": epoch,
                "consumed": consumed, "diverged_at": None, "reason": None, "step": step}

    after_kept = [st("running", k, (s - 1) // 3, (s - 1) % 3 + 1, s) for k, s in enumerate(kept, 1)]
    return [st("running", 0, 0, 0, 0)] + after_kept + [st("done", len(kept), 3, 3, 12)]


def test_every_resume_state_write_of_sequential_and_vectorised_runs(tmp_path, monkeypatch):
    kw = dict(schedule="cyclical", cycles=2, exploration_fraction=0.25, burn_in_epochs=1, thin=1, seed=4,
              temperature=0.5, rhat_strict=1.02, rhat_lenient=1.3, min_ess_per_chain=2.0)
    runs, results = {}, {}
    for vec in (False, True):
        model, loader, sc = setup("sgld", vectorize_chains=vec, **kw)
        with monkeypatch.context() as mp:
            writes = record_writes(mp)
            results[vec] = run_chains(model, loader, sc, store=tmp_path / str(vec))
        runs[vec] = {c: [w[1:] for w in writes if w[0] == c] for c in (0, 1)}
    for res in results.values():  # 2 chains x 7 draws: a verdict with the configured thresholds
        v = res.verdict
        assert (v.n_chains, v.n_draws, v.rhat_strict, v.rhat_lenient, v.min_ess_per_chain) == (2, 7, 1.02, 1.3, 2.0)
    seq_store, vec_store = results[False].store, results[True].store
    keys = [sorted((e["chain"], e["step"]) for e in s.entries) for s in (seq_store, vec_store)]
    assert keys[0] == keys[1]
    for c in (0, 1):  # the same samples (the vectorised chain with the configured temperature), up to rounding
        for i, j in zip(seq_store.indices(c), vec_store.indices(c)):
            a, b = seq_store.load(i), vec_store.load(j)
            for k in a:
                torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6)
    for c in (0, 1):
        seq, vec = runs[False][c], runs[True][c]
        assert [w[2] for w in seq] == expected_states(c, 4)
        assert [w[2] for w in vec] == expected_states(c, 4)
        for (ts, js, _), (tv, jv, _) in zip(seq, vec):  # the same RNG snapshots and sampler generator at every write
            assert js == jv and ts.keys() == tv.keys()
            for k in ts:
                if k.startswith("rng/"):
                    assert torch.equal(ts[k], tv[k]), k
                else:
                    torch.testing.assert_close(tv[k], ts[k], rtol=1e-5, atol=1e-6, equal_nan=True)  # NaN before step 1
    # chain 1 starts where chain 0's data left the RNGs: its first snapshot is not chain 0's
    assert not torch.equal(runs[False][1][0][0]["rng/now/torch"], runs[False][0][0][0]["rng/now/torch"])


# ---- divergence bookkeeping with a scripted sampler ----------------------------------------------------------------
# 12 steps (4 epochs x 3 batches), burn-in 3, thin 2: kept after steps 5, 7, 9, 11; checks every 4 steps (4, 8, 12)
# and before every kept sample. Chain 1: log_prob = +inf at step 6 only (parameters finite), caught at step 7 (the
# accumulated flag, read before the sample). Chain 2: parameters NaN after step 9, a kept step that is no periodic
# check. Chain 0 never fails. Each step adds 0.5 to every parameter.
EVENTS = {1: {6: "log_prob"}, 2: {9: "params"}}
SEED = 10
OUTCOME = {  # chain -> (report, kept steps, final (epoch, consumed))
    0: (ChainReport(0, SEED, 12, 4), [5, 7, 9, 11], (3, 3)),
    1: (ChainReport(1, SEED + 1, 7, 1, True, 7, DIVERGED), [5], (2, 1)),
    2: (ChainReport(2, SEED + 2, 9, 2, True, 9, DIVERGED), [5, 7], (2, 3)),
}


def scripted_sampler(schedule) -> Sampler:
    def init(theta0, seed=None):
        return init_state(theta0, seed)

    def step(state, batch):
        event = EVENTS.get(state.rng.initial_seed() - SEED, {}).get(state.step + 1)
        with torch.no_grad():
            for leaf in state.leaves:
                leaf.add_(0.5)
                if event == "params":
                    leaf.fill_(float("nan"))
        state.log_prob = torch.tensor(float("inf") if event == "log_prob" else -1.0)
        state.step += 1
        return state

    return Sampler("scripted", init, step, {}, schedule)


class CountingProbe:
    """Diagnostics ``{"s": Σθ}``; records each call: ``("one", None)`` or ``("many", number of parameter sets)``."""

    def __init__(self):
        self.calls = []

    def __call__(self, params):
        self.calls.append(("one", None))
        return {"s": float(params["w"].sum())}

    def many(self, params_list):
        self.calls.append(("many", len(params_list)))
        return [{"s": float(p["w"].sum())} for p in params_list]


@pytest.mark.parametrize("chains", [[0, 1, 2], [1, 2]], ids=["one-survives", "all-diverge"])
@pytest.mark.parametrize("together", [False, True], ids=["sequential", "lockstep"])
def test_divergence_bookkeeping(tmp_path, monkeypatch, chains, together):
    cfg = SamplerConfig(epochs=4, burn_in_epochs=1, thin=2, divergence_check_every=4, seed=SEED)
    schedule = chain_schedule(cfg, 12)
    loader = DataLoader(TensorDataset(torch.zeros(3, 1)), batch_size=1)
    store, probe = SampleStore(tmp_path), CountingProbe()
    walker = ChainWalker(scripted_sampler(schedule), schedule, cfg, loader, store, probe, torch.device("cpu"), 12, 3)
    theta0 = {c: {"w": torch.tensor([float(c), -1.0])} for c in chains}
    writes = record_writes(monkeypatch)
    if together:
        def zero_grad(states, batches):
            return torch.zeros(len(states)), [[torch.zeros_like(x) for x in s.leaves] for s in states]

        reports = walker.run_together(chains, theta0, nn.Linear(1, 1), walker.sampler, PrecomputedLogProb(), zero_grad)
    else:
        reports = [walker.run(c, theta0[c]) for c in chains]
    assert [vars(r) for r in reports] == [vars(OUTCOME[c][0]) for c in chains]
    diverged = [OUTCOME[c][0] for c in chains if OUTCOME[c][0].diverged]
    assert store.diverged == {str(r.chain): {"step": r.diverged_at, "reason": DIVERGED} for r in diverged}
    for c in chains:
        rep, kept, (epoch, consumed) = OUTCOME[c]
        idx = store.indices(c)
        assert [store.entries[i]["step"] for i in idx] == kept
        for i, s in zip(idx, kept):
            assert torch.equal(store.load(i)["w"], theta0[c]["w"] + 0.5 * s)
        final = [w[3] for w in writes if w[0] == c][-1]
        assert final == {"chain": c, "seed": SEED + c, "status": "diverged" if rep.diverged else "done",
                         "draws": len(kept), "epoch": epoch, "consumed": consumed, "diverged_at": rep.diverged_at,
                         "reason": rep.reason, "step": rep.steps}
    recs = sorted(store.diagnostic_records(), key=lambda r: (r["chain"], r["draw"]))
    assert [r["s"] for r in recs] == [float((theta0[c]["w"] + 0.5 * s).sum()) for c in chains for s in OUTCOME[c][1]]
    if together:  # one batched probe per kept step, over the chains still running; never one chain at a time
        running = [[c for c in chains if OUTCOME[c][0].steps >= s] for s in (5, 7, 9, 11)]
        assert probe.calls == [("many", len(r)) for r in running if r]
    else:
        assert probe.calls == [("one", None)] * len(recs)


# ---- progress lines ------------------------------------------------------------------------------------------------
def progress_lines(text: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"^(.+? \d+/\d+) \| elapsed", text, re.M)]


def test_progress_lines_of_fresh_resumed_vectorised_and_silenced_runs(tmp_path, monkeypatch, capsys):
    """Lines mode with a line per item: the line of item k is printed when item k + 1 is asked for, so a loop of n
    sampler steps prints items 1 .. n − 1. 6 steps per chain (2 epochs x 3 batches), thin 2: kept after 2, 4, 6."""
    monkeypatch.setattr(bayespeft.progress, "LINE_INTERVAL_S", 0.0)
    monkeypatch.setenv("BAYESPEFT_PROGRESS", "lines")
    kw = dict(epochs=2, burn_in_epochs=0, thin=2)
    model, loader, sc = setup("sgld", **kw)
    real, seen = runner_mod.to_device, [0]

    def kill_before_step_4(batch, device):
        seen[0] += 1
        if seen[0] == 4:
            raise Killed
        return real(batch, device)

    with monkeypatch.context() as mp:
        mp.setattr(runner_mod, "to_device", kill_before_step_4)
        with pytest.raises(Killed):
            run_chains(model, loader, sc, store=tmp_path / "cut")
    capsys.readouterr()
    model, loader, sc = setup("sgld", **kw)
    run_chains(model, loader, sc, store=tmp_path / "cut", resume=True)
    # chain 0 continues after its state at step 2: 4 steps left; chain 1 runs its 6
    assert progress_lines(capsys.readouterr().err) == ([f"sgld chain 0 {k}/4" for k in range(1, 4)]
                                                       + [f"sgld chain 1 {k}/6" for k in range(1, 6)])
    model, loader, sc = setup("sgld", vectorize_chains=True, **kw)
    run_chains(model, loader, sc, store=tmp_path / "vec")
    assert progress_lines(capsys.readouterr().err) == [f"sgld chains [0, 1] (vectorised) {k}/6" for k in range(1, 6)]
    for vec in (False, True):  # show_progress=False wins over BAYESPEFT_PROGRESS
        model, loader, sc = setup("sgld", vectorize_chains=vec, **kw)
        run_chains(model, loader, sc, store=tmp_path / f"quiet{vec}", show_progress=False)
        assert progress_lines(capsys.readouterr().err) == []


# ---- the plan metadata, the store argument, refusals -------------------------------------------------------------
def test_plan_metadata_merges_the_chains_of_every_call(tmp_path):
    model, loader, (x, y), _ = tiny_problem()
    cfg = SamplerConfig(sampler="sgld", lr=1e-3, epochs=2, burn_in_epochs=0, thin=1, n_chains=1, probe_size=4)
    store = SampleStore(tmp_path)
    res = run_chains(model, loader, cfg, store=store, chain_ids=[3])
    assert res.store is store and [r.chain for r in res.chains] == [3]
    want = {"sampler": json.loads(json.dumps(cfg.model_dump())), "plan": {"chains": [0, 3], "draws_per_chain": 2,
                                                                          "steps_per_chain": 2}}
    assert SampleStore(tmp_path).metadata == want
    run_chains(model, loader, cfg, store=tmp_path, chain_ids=[5])
    want["plan"]["chains"] = [0, 3, 5]  # chain 0 (n_chains = 1) and every chain run into the store
    assert SampleStore(tmp_path).metadata == want
    run_chains(model, loader, cfg, n_chains=2, store=tmp_path / "two", chain_ids=[1])
    assert SampleStore(tmp_path / "two").metadata["plan"]["chains"] == [0, 1]


def test_refusals_name_the_problem(tmp_path):
    model, loader, _, _ = tiny_problem()
    cfg = SamplerConfig(sampler="sgld", lr=1e-3, epochs=2, burn_in_epochs=0, thin=1, n_chains=1, probe_size=4)
    with pytest.raises(ValueError, match=r"^n_chains must be >= 1, got 0$"):
        run_chains(model, loader, cfg, n_chains=0, store=tmp_path / "zero")
    run_chains(model, loader, cfg, store=tmp_path / "s")  # chain 0 only
    with pytest.raises(ValueError, match=r"holds samples of chain\(s\) \[0\]; pass resume=True to continue them$"):
        run_chains(model, loader, cfg, n_chains=2, store=tmp_path / "s")
    # samples without a resume state (written by other code): refused as well, and left as they are
    other = SampleStore(tmp_path / "other")
    other.add(0, {"weight": torch.zeros(3, 2), "bias": torch.zeros(3)}, step=1)
    with pytest.raises(ValueError, match=r"holds samples of chain\(s\) \[0\]"):
        run_chains(model, loader, cfg, store=tmp_path / "other")
    assert len(SampleStore(tmp_path / "other")) == 1


@pytest.mark.parametrize(("setting", "n_chains", "resume", "want"), [
    (False, 2, False, ("INFO", "SG-MCMC chains run one at a time: sgmcmc.vectorize_chains is false")),
    ("auto", 2, False, ("INFO", "SG-MCMC chains [0, 1] run as one vectorised computation")),
    ("auto", 1, False, ("INFO", "SG-MCMC chains run one at a time: a single chain")),
    (True, 1, False, ("WARNING", "SG-MCMC chains run one at a time: a single chain")),
    (True, 2, True, ("WARNING", "SG-MCMC chains run one at a time: resume continues the chains one at a time")),
])
def test_the_vectorisation_decision_is_logged_as_a_warning_only_when_it_was_asked_for(tmp_path, caplog, setting,
                                                                                      n_chains, resume, want):
    model, loader, _, _ = tiny_problem()
    cfg = SamplerConfig(sampler="sgld", lr=1e-3, epochs=2, burn_in_epochs=0, thin=1, n_chains=n_chains,
                        probe_size=4, vectorize_chains=setting)
    with caplog.at_level(logging.INFO, logger="bayespeft.sgmcmc.runner"):
        run_chains(model, loader, cfg, store=tmp_path, resume=resume)
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "bayespeft.sgmcmc.runner"] == [want]


def test_every_batch_goes_to_the_models_device(tmp_path, monkeypatch):
    """The sampler steps and the vectorised trial step move their batches to the model's device (on this CPU-only
    machine ``to_device(batch, None)`` is a no-op, so the device asked for is recorded instead)."""
    import bayespeft.batch

    asked = []
    for mod in (runner_mod, bayespeft.batch):  # the runner's steps; try_first_step imports it from bayespeft.batch
        real = mod.to_device

        def spy(batch, device, real=real, where=mod.__name__):
            asked.append((where, device))
            return real(batch, device)

        monkeypatch.setattr(mod, "to_device", spy)
    for vec in (False, True):
        model, loader, sc = setup("sgld", vectorize_chains=vec, epochs=2, burn_in_epochs=0, thin=2)
        run_chains(model, loader, sc, store=tmp_path / str(vec))
    cpu = torch.device("cpu")
    # 2 chains x 6 steps, one at a time then in lockstep; one trial batch before the lockstep run
    step, trial = ("bayespeft.sgmcmc.runner", cpu), ("bayespeft.batch", cpu)
    assert asked == [step] * 12 + [trial] + [step] * 12
