"""SG-MCMC on an accelerator (the ``accelerator`` fixture: a real GPU, else tests/virtual_device.py) against the same
computation on the CPU: every sampler's state, ``run_chains`` one chain at a time with an interrupted and resumed
run, vectorised chains, the sample store, ensemble prediction and the probe diagnostics.

Each chain's noise is drawn on the parameters' device by a generator of that device (:func:`bayespeft.sgmcmc.base.
init_state`). The virtual accelerator's generator is a CPU one, so there every value equals the CPU run's exactly;
a CUDA generator has its own stream, so on a real GPU the values are only checked to be finite and shaped alike.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from bayespeft.sgmcmc import SampleStore, build, ensemble_predict, predict_sample, run_chains
from bayespeft.sgmcmc.probe import ProbeDiagnostics, probe_batch
from bayespeft.sgmcmc.resume import buffer_fields

_spec = importlib.util.spec_from_file_location("_sgmcmc_resume_helpers_acc", Path(__file__).with_name("test_resume.py"))
_resume = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_resume)  # its augmenting, shuffled loader, model and kill points
setup, OPTIONS, kill_after_add, Killed = _resume.setup, _resume.OPTIONS, _resume.kill_after_add, _resume.Killed

torch.set_num_threads(1)


def same_values(accelerator) -> bool:
    """Whether the accelerator draws the CPU's random stream (the virtual one does; CUDA does not)."""
    return accelerator.type != "cuda"


# ---- each sampler, a few steps on a Gaussian target ------------------------------------------------------------------
def gaussian_log_prob(theta, batch):
    """``log N(θ; μ, ½ I)`` up to a constant; ``batch`` holds the means ``μ`` (same structure as ``θ``)."""
    return -sum(((theta[k] - batch[k]) ** 2).sum() for k in sorted(theta))


def walk(name: str, device: torch.device, steps: int = 3):
    """The sampler's state after ``init`` and after ``steps`` steps, everything made on ``device``."""
    sampler = build(name, gaussian_log_prob, lr=0.05, temperature=0.7, seed=11, **OPTIONS[name])
    theta0 = {"w": torch.linspace(-1, 1, 6, dtype=torch.float64).reshape(2, 3).to(device),
              "b": torch.tensor([0.5, -0.25], dtype=torch.float64).to(device)}
    mu = {"w": torch.full((2, 3), 0.3, dtype=torch.float64).to(device),
          "b": torch.tensor([-1.0, 2.0], dtype=torch.float64).to(device)}
    state = sampler.init(theta0)
    initial = state_tensors(state)
    for _ in range(steps):
        state = sampler.step(state, mu)
    return initial, state


def state_tensors(state) -> dict[str, torch.Tensor]:
    """Every tensor of a sampler state (parameters, noise buffer and its views, log_prob, the sampler's buffers)."""
    out = {f"param/{k}": v.detach().clone() for k, v in state.params.items()}
    out.update({f"noise/{i}": v.clone() for i, v in enumerate(state.noise)})
    out.update({"flat_noise": state.flat_noise.clone(), "log_prob": state.log_prob.clone()})
    for name in buffer_fields(state):
        out.update({f"{name}/{i}": b.clone() for i, b in enumerate(getattr(state, name))})
    return out


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_each_sampler_steps_on_the_accelerator_as_on_the_cpu(accelerator, name):
    init_cpu, cpu = walk(name, torch.device("cpu"))
    init_acc, acc = walk(name, accelerator)
    assert acc.rng.device == accelerator and acc.step == 3
    for when, got, want in (("init", init_acc, init_cpu), ("after 3 steps", state_tensors(acc), state_tensors(cpu))):
        assert got.keys() == want.keys()
        assert {k: v.device for k, v in got.items()} == {k: accelerator for k in want}, when
        for k in want:
            g = got[k].cpu()
            assert g.shape == want[k].shape and g.dtype == want[k].dtype, (when, k)
            if same_values(accelerator) or when == "init":
                torch.testing.assert_close(g, want[k], rtol=1e-12, atol=1e-12, equal_nan=True, msg=f"{when} {k}")
            else:
                assert torch.isfinite(g).all(), (when, k)
    if same_values(accelerator):
        assert torch.equal(acc.rng.get_state(), cpu.rng.get_state())


# ---- run_chains ------------------------------------------------------------------------------------------------------
def assert_like(acc: SampleStore, cpu: SampleStore, accelerator) -> None:
    """The accelerator run's store against the CPU run's: the same entries, and the same values (finite on CUDA)."""
    if same_values(accelerator):
        _resume.assert_same(acc, cpu)
        return
    (sa, ra), (sb, rb) = _resume.dump(acc), _resume.dump(cpu)
    assert [e for e, _ in sa] == [e for e, _ in sb] and [r.keys() for r in ra] == [r.keys() for r in rb]
    assert all(torch.isfinite(t).all() for _, ts in sa for t in ts.values())


def test_sequential_chains_interrupted_and_resumed_on_the_accelerator(accelerator, tmp_path, monkeypatch):
    """SGHMC (momenta), jittered starts, two chains one at a time; the run is killed after chain 0's second kept
    sample and resumed, on the accelerator, then compared with an uninterrupted CPU run."""
    model, loader, cfg = setup("sghmc", vectorize_chains=False)
    ref = run_chains(model, loader, cfg, store=tmp_path / "cpu")
    model, loader, cfg = setup("sghmc", vectorize_chains=False)
    model.to(accelerator)
    with monkeypatch.context() as mp:
        kill_after_add(mp, 2)
        with pytest.raises(Killed):
            run_chains(model, loader, cfg, store=tmp_path / "acc")
    assert len(SampleStore(tmp_path / "acc")) == 2
    model, loader, cfg = setup("sghmc", vectorize_chains=False)
    model.to(accelerator)
    res = run_chains(model, loader, cfg, store=tmp_path / "acc", resume=True)
    assert all(p.device == accelerator for p in model.parameters())
    assert [vars(r) for r in res.chains] == [vars(r) for r in ref.chains] and not res.diverged
    assert_like(res.store, ref.store, accelerator)


def test_vectorised_chains_on_the_accelerator(accelerator, tmp_path):
    """``vectorize_chains=True`` raises if the trial step fails, so the batched run must work on the device."""
    model, loader, cfg = setup("sgld", vectorize_chains=True)
    ref = run_chains(model, loader, cfg, store=tmp_path / "cpu")
    model, loader, cfg = setup("sgld", vectorize_chains=True)
    res = run_chains(model.to(accelerator), loader, cfg, store=tmp_path / "acc")
    assert [vars(r) for r in res.chains] == [vars(r) for r in ref.chains]
    assert_like(res.store, ref.store, accelerator)


# ---- store, prediction, probe --------------------------------------------------------------------------------------
@pytest.fixture
def sampled(tmp_path):
    """A CPU model, its loader and a store of 12 SGLD samples (two chains of 6)."""
    model, loader, cfg = setup("sgld", vectorize_chains=False, epochs=2, burn_in_epochs=0, thin=1, n_chains=2)
    return model, loader, run_chains(model, loader, cfg, store=tmp_path / "s").store


def test_store_loads_samples_onto_the_device_asked(accelerator, sampled):
    _, _, store = sampled
    for i in range(len(store)):
        cpu, acc = store.load(i), store.load(i, device=accelerator)
        assert {k: v.device.type for k, v in cpu.items()} == {k: "cpu" for k in cpu}
        assert {k: v.device for k, v in acc.items()} == {k: accelerator for k in cpu}
        assert all(torch.equal(acc[k].cpu(), cpu[k]) for k in cpu)


def test_ensemble_prediction_on_the_accelerator(accelerator, sampled):
    """The ensemble of a store, of chosen indices and of accelerator samples; one sample's prediction; the model's
    parameters restored (on the device) after each. Results are on the CPU, as documented."""
    model, _, store = sampled
    blobs = _resume.NoisyBlobs()  # its tensors, without the augmentation, in three fixed CPU batches
    loader = [{"features": blobs.x[i:i + 16], "labels": blobs.y[i:i + 16]} for i in (0, 16, 32)]
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    want = [ensemble_predict(model, store, loader), ensemble_predict(model, store, loader, indices=[4, 1]),
            predict_sample(model, store.load(3), loader)]
    model.to(accelerator)
    on_device = [store.load(i, device=accelerator) for i in range(len(store))]
    got = [ensemble_predict(model, store, loader), ensemble_predict(model, store, loader, indices=[4, 1]),
           predict_sample(model, on_device[3], loader), ensemble_predict(model, on_device, loader)]
    want.append(want[0])
    for g, w in zip(got, want):
        assert g.device.type == "cpu" and g.dtype == torch.float32 and g.shape == w.shape == (40, 3)
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)  # float32 forward: a GPU rounds differently
    for k, v in model.named_parameters():
        assert v.device == accelerator and torch.equal(v.detach().cpu(), before[k])


def test_probe_diagnostics_on_the_accelerator(accelerator, sampled):
    """Single and batched (``many``) probes of accelerator samples with a CPU probe batch (moved by the probe)."""
    model, loader, store = sampled
    batch = probe_batch(loader, 8)
    samples = [store.load(i) for i in range(3)]
    cpu = ProbeDiagnostics(model, batch, n_projections=3, seed=4)
    want = [cpu(s) for s in samples] + cpu.many(samples)
    probe = ProbeDiagnostics(model.to(accelerator), batch, n_projections=3, seed=4)
    on_device = [{k: v.to(accelerator) for k, v in s.items()} for s in samples]
    got = [probe(s) for s in on_device] + probe.many(on_device)
    assert probe.inputs["features"].device == probe.labels.device == probe._dirs.device == accelerator
    for g, w in zip(got, want):
        assert g.keys() == w.keys() == {"loglik", "param_norm", "proj_0", "proj_1", "proj_2", "true_class_prob"}
        assert all(isinstance(v, float) for k, v in g.items() if k != "true_class_prob")
        assert g.pop("true_class_prob") == pytest.approx(w.pop("true_class_prob"), rel=1e-5, abs=1e-6)
        assert g == pytest.approx(w, rel=1e-5, abs=1e-6)
