"""The bayesian-lora drop-in on an accelerator (a GPU, or tests/virtual_device.py) gives the CPU's numbers.

A tiny causal LM (embedding -> Linear -> tanh -> LM head, logits ``(B, T, V)``, right-padded prompts, answer-letter
logits at the last non-padding position, as in ``test_bayesian_lora_causal_lm.py``) runs the whole pipeline
(factors -> Cholesky roots -> evidence -> Jacobians -> variance -> predictive) with the model on the CPU and on
the accelerator. Focused tests: roots moved to the requested device, a Jacobian on another device than the roots,
and roots of different layers on different devices (a model split over devices).
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from bayespeft.laplace.bayesian_lora import (
    calculate_kronecker_factors,
    cholesky_decompose_small_factors,
    jacobian_mean,
    linearized_predictive,
    model_evidence,
    variance,
)

LETTERS = torch.tensor([3, 5, 7, 9])
V, T, N = 12, 5, 8
TOL = dict(rtol=1e-9, atol=1e-11)


class TinyCausalLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(V, 6)
        self.proj = nn.Linear(6, 6)
        self.lm_head = nn.Linear(6, V)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> SimpleNamespace:
        return SimpleNamespace(logits=self.lm_head(torch.tanh(self.proj(self.embed(input_ids)))))


def _model() -> nn.Module:
    torch.manual_seed(0)
    return TinyCausalLM().double()


def _batches() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(2, T + 1, (N,), generator=g)
    ids = torch.randint(1, V, (N, T), generator=g) * (torch.arange(T) < lengths[:, None])
    mask = (torch.arange(T) < lengths[:, None]).long()
    return [{"input_ids": ids[i : i + 4], "attention_mask": mask[i : i + 4]} for i in range(0, N, 4)]


def _letter_logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    dev = next(model.parameters()).device
    logits = model(**{k: v.to(dev) for k, v in batch.items()}).logits
    last = batch["attention_mask"].sum(1) - 1
    return logits[torch.arange(logits.shape[0]), last][:, LETTERS]


def _pipeline(model: nn.Module, device: torch.device, n_kfac: int | None):
    factors = calculate_kronecker_factors(model, _letter_logits, _batches(), n_kfac=n_kfac, lr_threshold=8,
                                          generator=torch.Generator().manual_seed(0))
    raw = {k: (a.clone(), s.clone()) for k, (a, s) in factors.items()}
    roots = cholesky_decompose_small_factors(factors, 8, device, torch.float64)
    s2 = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    evidence = model_evidence(model, -9.0, roots, 0, 0, s2)
    (grad,) = torch.autograd.grad(evidence, s2)
    inputs = {k: v.to(device) for k, v in _batches()[0].items()}
    jac, f_mu = jacobian_mean(model, inputs, target_ids=LETTERS)
    var = variance(inputs, jac, roots, 0.7, len(LETTERS), 0, 0, device)
    probs = linearized_predictive(f_mu, var.double(), "mc", n_samples=200, generator=torch.Generator().manual_seed(2))
    return raw, roots, evidence, grad, jac, f_mu, var, probs


@pytest.mark.parametrize("n_kfac", [None, 3])  # dense factors; low-rank roots for the LM head (side 12 >= 8)
def test_pipeline_on_the_device_equals_the_cpu(accelerator, n_kfac):
    model = _model()
    cpu = _pipeline(copy.deepcopy(model), torch.device("cpu"), n_kfac)
    acc = _pipeline(copy.deepcopy(model).to(accelerator), accelerator, n_kfac)
    raw_c, roots_c, ev_c, grad_c, jac_c, f_c, var_c, p_c = cpu
    raw_a, roots_a, ev_a, grad_a, jac_a, f_a, var_a, p_a = acc
    assert list(raw_a) == list(raw_c) == ["proj", "lm_head"]
    for name in raw_c:
        for x, y in [*zip(raw_a[name], raw_c[name]), *zip(roots_a[name], roots_c[name])]:
            assert x.device == accelerator
            torch.testing.assert_close(x.cpu(), y, **TOL)
    torch.testing.assert_close(ev_a.cpu(), ev_c, **TOL)
    torch.testing.assert_close(grad_a.cpu(), grad_c, **TOL)
    for name in jac_c:
        assert jac_a[name].device == accelerator
        torch.testing.assert_close(jac_a[name].cpu(), jac_c[name], **TOL)
    for x, y in [(f_a, f_c), (var_a, var_c), (p_a, p_c)]:
        assert x.device == accelerator
        torch.testing.assert_close(x.cpu(), y, rtol=1e-5, atol=1e-7)  # var is float32 by contract


def _cpu_roots(model):
    factors = calculate_kronecker_factors(model, _letter_logits, _batches(), generator=torch.Generator().manual_seed(0))
    return cholesky_decompose_small_factors(factors, 8, "cpu", torch.float64)


def test_cholesky_roots_go_to_the_requested_device(accelerator):
    roots = _cpu_roots(_model())
    moved = cholesky_decompose_small_factors({k: (a.clone(), s.clone()) for k, (a, s) in roots.items()}, 8, accelerator,
                                             torch.float64)  # already roots: only moved
    back = cholesky_decompose_small_factors({k: (a.to(accelerator), s.to(accelerator)) for k, (a, s) in roots.items()},
                                            8, "cpu", torch.float64)
    for name, pair in roots.items():
        for r, m, b in zip(pair, moved[name], back[name]):
            assert m.device == accelerator and b.device.type == "cpu"
            torch.testing.assert_close(m.cpu(), r, rtol=0, atol=0)
            torch.testing.assert_close(b, r, rtol=0, atol=0)


def test_variance_computes_on_the_roots_device_and_returns_on_the_requested_one(accelerator):
    model = _model()
    roots = _cpu_roots(model)
    inputs = _batches()[0]
    jac, _ = jacobian_mean(model, inputs, target_ids=LETTERS)
    want = variance(inputs, jac, roots, 0.7, len(LETTERS), 0, 0, "cpu")
    on_acc = {k: (a.to(accelerator), s.to(accelerator)) for k, (a, s) in roots.items()}
    got = variance(inputs, jac, on_acc, 0.7, len(LETTERS), 0, 0, "cpu")  # CPU Jacobian, device roots, CPU result
    assert got.device.type == "cpu" and got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-8)
    there = variance(inputs, jac, roots, 0.7, len(LETTERS), 0, 0, accelerator)  # CPU roots, device result
    assert there.device == accelerator
    torch.testing.assert_close(there.cpu(), want, rtol=1e-6, atol=1e-8)


def test_layers_on_different_devices(accelerator):
    """A model split over devices: ``proj`` (and its roots) on the CPU, ``lm_head`` on the accelerator."""
    model = _model()
    roots = _cpu_roots(model)
    inputs = _batches()[0]
    jac, _ = jacobian_mean(model, inputs, target_ids=LETTERS)
    want_var = variance(inputs, jac, roots, 0.7, len(LETTERS), 0, 0, "cpu")
    want_ev = model_evidence(model, -9.0, roots, 0, 0, 0.7)
    split = copy.deepcopy(model)
    split.lm_head.to(accelerator)
    mixed = {"proj": roots["proj"], "lm_head": tuple(r.to(accelerator) for r in roots["lm_head"])}
    got_var = variance(inputs, jac, mixed, 0.7, len(LETTERS), 0, 0, "cpu")
    torch.testing.assert_close(got_var, want_var, rtol=1e-6, atol=1e-8)
    got_ev = model_evidence(split, -9.0, mixed, 0, 0, 0.7)
    assert got_ev.device.type == "cpu"
    torch.testing.assert_close(got_ev, want_ev, **TOL)
