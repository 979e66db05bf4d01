"""Resuming interrupted SG-MCMC chains (``run_chains(..., resume=True)``) against an uninterrupted run of the same
config: every sample tensor, every diagnostic record and every chain report must be bit-identical, whatever step the
run was killed at, for every sampler in the registry (their buffers: momenta, moment averages, the rank-1 scalar).

The data pipeline is shuffled by the loader's generator and adds noise from the *global* torch RNG (as a random crop
would), so the test also checks that both are put back, and that a chain which never started picks up the RNGs the
previous chain ended with."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from bayespeft.sgmcmc import SAMPLERS, SampleStore, SamplerConfig, run_chains
from bayespeft.sgmcmc import runner as runner_mod

torch.set_num_threads(1)

OPTIONS = {"sghmc": {"friction": 0.5}, "sam_sgld": {"rho": 0.01}, "sam_sgld_r1": {"rho": 0.01, "rank1_scale": 0.5},
           "asgld": {}, "psgld": {"alpha": 0.9}, "sgld": {}}


class NoisyBlobs(Dataset):
    """Three Gaussian blobs; every read adds N(0, 0.1²) from the global torch RNG (an augmentation)."""

    def __init__(self, n=40):
        g = torch.Generator().manual_seed(1)
        self.y = torch.arange(n) % 3
        self.x = torch.randn(n, 4, generator=g) + 2.0 * nn.functional.one_hot(self.y, 4).float()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"features": self.x[i] + 0.1 * torch.randn(4), "labels": self.y[i]}


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))


class Wrapped(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = make_model()

    def forward(self, features):
        return self.net(features)


def setup(sampler="sghmc", n_data=40, **kw):
    """``n_data = 40``: the last batch is short; a multiple of 16 ends each pass on a full batch (the sampler's
    end-of-pass draw then happens only on the ``next()`` that stops the loop)."""
    torch.manual_seed(123)  # the global RNG the augmentation draws from
    loader = DataLoader(NoisyBlobs(n_data), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(5))
    opts = dict(sampler=sampler, options=OPTIONS[sampler], lr=1e-3, epochs=4, burn_in_epochs=1, thin=2, n_chains=2,
                n_projections=2, probe_size=8, init="jitter", init_jitter=0.01)
    opts.update(kw)
    return Wrapped(), loader, SamplerConfig(**opts)


def dump(store: SampleStore) -> list:
    recs = sorted(store.diagnostic_records(), key=lambda r: (r["chain"], r["draw"]))
    return [(e, store.load(i)) for i, e in enumerate(store.entries)], recs


def assert_same(a: SampleStore, b: SampleStore) -> None:
    (sa, ra), (sb, rb) = dump(a), dump(b)
    assert [e for e, _ in sa] == [e for e, _ in sb]
    for (_, ta), (_, tb) in zip(sa, sb):
        assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    assert ra == rb


class Killed(Exception):
    """Stands for the process being killed."""


def kill_at_batch(monkeypatch, n: int) -> None:
    """Raise while the ``n``-th batch of the whole run (1-based) is moved to the device, i.e. before that step."""
    real, seen = runner_mod.to_device, [0]

    def counting(batch, device):
        seen[0] += 1
        if seen[0] == n:
            raise Killed
        return real(batch, device)

    monkeypatch.setattr(runner_mod, "to_device", counting)


def kill_after_add(monkeypatch, k: int) -> None:
    """Raise right after the ``k``-th sample is written, before the chain's resume state is updated."""
    real, seen = SampleStore.add, [0]

    def add(self, *a, **kw):
        out = real(self, *a, **kw)
        seen[0] += 1
        if seen[0] == k:
            raise Killed
        return out

    monkeypatch.setattr(SampleStore, "add", add)


def kill_after_done(monkeypatch, chain: int) -> None:
    """Raise right after chain ``chain`` recorded that it finished, before the next chain wrote anything."""
    real = runner_mod.ChainWalker.save

    def save(self, c, state, status, *a, **kw):
        real(self, c, state, status, *a, **kw)
        if c == chain and status == "done":
            raise Killed

    monkeypatch.setattr(runner_mod.ChainWalker, "save", save)


def reference(tmp_path, sampler="sghmc", **kw):
    model, loader, sc = setup(sampler, **kw)
    res = run_chains(model, loader, sc, store=tmp_path / "ref")
    return res


def interrupted_then_resumed(tmp_path, monkeypatch, kill, sampler="sghmc", **kw):
    model, loader, sc = setup(sampler, **kw)
    with monkeypatch.context() as mp:
        kill(mp)
        with pytest.raises(Killed):
            run_chains(model, loader, sc, store=tmp_path / "cut")
    partial = SampleStore(tmp_path / "cut")
    assert partial.completeness()["complete"] is False
    # a new process: fresh model, loader and global RNG (seeded as any run of the config is)
    model, loader, sc = setup(sampler, **kw)
    return partial, run_chains(model, loader, sc, store=tmp_path / "cut", resume=True)


# 4 epochs x 3 batches = 12 steps per chain, burn-in 3, thin 2: draws after steps 5, 7, 9, 11 (4 per chain).
@pytest.mark.parametrize("kill", [
    pytest.param(lambda mp: kill_at_batch(mp, 2), id="chain0-burn-in"),
    pytest.param(lambda mp: kill_at_batch(mp, 9), id="chain0-mid-epoch-after-draws"),
    pytest.param(lambda mp: kill_after_done(mp, 0), id="between-chains"),
    pytest.param(lambda mp: kill_at_batch(mp, 13), id="chain1-first-batch"),
    pytest.param(lambda mp: kill_at_batch(mp, 23), id="chain1-last-epoch"),
    pytest.param(lambda mp: kill_after_add(mp, 3), id="between-sample-and-state"),
    pytest.param(lambda mp: kill_after_add(mp, 4), id="after-last-draw-of-chain0"),
])
def test_resume_is_bit_exact(tmp_path, monkeypatch, kill):
    ref = reference(tmp_path)
    partial, res = interrupted_then_resumed(tmp_path, monkeypatch, kill)
    assert_same(ref.store, SampleStore(tmp_path / "cut"))
    assert [vars(r) for r in res.chains] == [vars(r) for r in ref.chains]
    assert SampleStore(tmp_path / "cut").completeness()["complete"] is True
    assert ref.verdict == res.verdict


@pytest.mark.parametrize("sampler", SAMPLERS.names())
def test_every_sampler_resumes_bit_exactly(tmp_path, monkeypatch, sampler):
    ref = reference(tmp_path, sampler)
    _, res = interrupted_then_resumed(tmp_path, monkeypatch, lambda mp: kill_at_batch(mp, 10), sampler)
    assert_same(ref.store, res.store)


def test_cyclical_schedule_resumes_bit_exactly(tmp_path, monkeypatch):
    kw = dict(schedule="cyclical", cycles=2, exploration_fraction=0.25, burn_in_epochs=0, thin=1)
    ref = reference(tmp_path, "sgld", **kw)
    _, res = interrupted_then_resumed(tmp_path, monkeypatch, lambda mp: kill_at_batch(mp, 8), "sgld", **kw)
    assert_same(ref.store, res.store)


def test_partial_jsonl_line_and_orphan_draw_are_repaired(tmp_path, monkeypatch):
    """A crash mid-append leaves a partial line; resuming must not glue the next record onto it."""
    ref = reference(tmp_path)
    model, loader, sc = setup()
    with monkeypatch.context() as mp:
        kill_after_add(mp, 2)
        with pytest.raises(Killed):
            run_chains(model, loader, sc, store=tmp_path / "cut")
    for name in ("samples.jsonl", "diagnostics.jsonl"):
        with open(tmp_path / "cut" / name, "a") as f:
            f.write('{"file": "chain000/dra')
    model, loader, sc = setup()
    run_chains(model, loader, sc, store=tmp_path / "cut", resume=True)
    assert_same(ref.store, SampleStore(tmp_path / "cut"))
    lines = (tmp_path / "cut" / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 8 and all(json.loads(ln) for ln in lines)


def test_completeness_reports_what_is_missing(tmp_path, monkeypatch):
    model, loader, sc = setup()
    with monkeypatch.context() as mp:
        kill_at_batch(mp, 9)  # chain 0 has kept draws after steps 5 and 7; chain 1 never started
        with pytest.raises(Killed):
            run_chains(model, loader, sc, store=tmp_path / "cut")
    c = SampleStore(tmp_path / "cut").completeness()
    assert c == {"chains_asked": [0, 1], "chains_present": [0], "draws_per_chain_asked": 4, "draws_present": {0: 2},
                 "unfinished": [0, 1], "complete": False}


def test_rerunning_a_chain_without_resume_is_refused(tmp_path):
    model, loader, sc = setup(n_chains=1)
    run_chains(model, loader, sc, store=tmp_path / "s")
    with pytest.raises(ValueError, match=r"already holds samples of chain\(s\) \[0\]; pass resume=True"):
        run_chains(model, loader, sc, store=tmp_path / "s")


def test_resuming_a_finished_run_with_diverged_chains_changes_nothing(tmp_path):
    model, loader, sc = setup("sgld", lr=50.0, burn_in_epochs=0, thin=1, divergence_check_every=1)
    first = run_chains(model, loader, sc, store=tmp_path / "s")
    assert first.diverged == [0, 1]
    before = (tmp_path / "s" / "samples.jsonl").read_text(), dict(first.store.diverged)
    model, loader, sc = setup("sgld", lr=50.0, burn_in_epochs=0, thin=1, divergence_check_every=1)
    again = run_chains(model, loader, sc, store=tmp_path / "s", resume=True)
    assert [vars(r) for r in again.chains] == [vars(r) for r in first.chains]
    assert ((tmp_path / "s" / "samples.jsonl").read_text(), again.store.diverged) == before
