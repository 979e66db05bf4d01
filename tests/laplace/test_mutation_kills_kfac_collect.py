"""``KfacCollector`` / ``collect_kfac``: bf16 layers summed in float32, the collector's own dtype default, the
augmented activations, the low-rank threshold default, messages (tests/MUTATION.md, fourth pass).

References written out: ``A = Σ ã ãᵀ`` of the float32 activations with a trailing 1, ``G = Σ g gᵀ`` of the output
gradients, which for a single Linear head with GGN cotangents ``R`` are ``R`` itself.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bayespeft.laplace as L
from bayespeft.laplace.capture import cotangents
from bayespeft.laplace.kfac_collect import KfacCollector


def _ggn(logits, labels):
    return cotangents(logits, labels, "classification", "ggn")


def _head_batch(dtype, d_in=6, n=9):
    torch.manual_seed(0)
    head = nn.Linear(d_in, 3).to(dtype)
    x = torch.randn(n, d_in).to(dtype)
    return head, (x, torch.randint(0, 3, (n,)))


@pytest.mark.parametrize("n_kfac", [None, 2])  # dense, and low-rank A (d_A = 7 > lr_threshold 4)
def test_bf16_layer_factors_are_float32_sums_of_its_activations_and_output_gradients(n_kfac):
    head, batch = _head_batch(torch.bfloat16)
    f = L.collect_kfac(head, [batch], {"head": head}, curvature="ggn", n_kfac=n_kfac, lr_threshold=4,
                       forward_fn=lambda m, b: (m(b[0]), b[1]))["head"]
    a = torch.cat([batch[0].float(), torch.ones(9, 1)], 1)
    assert f.A.dtype == f.G.dtype == torch.float32
    M = (a.T @ a).double()
    if n_kfac is not None:  # one batch: the root keeps the top-2 eigenpairs of Σ ã ãᵀ
        lam, U = torch.linalg.eigh(M)
        M = U[:, -2:] @ torch.diag(lam[-2:]) @ U[:, -2:].T
    torch.testing.assert_close(f.dense_A().double(), M, rtol=1e-6 if n_kfac is None else 1e-5, atol=1e-5)
    with torch.no_grad():
        R = _ggn(head(batch[0]), batch[1]).float()  # (K, B, C): the head's output gradients are the cotangents
    torch.testing.assert_close(f.G, torch.einsum("kbc,kbd->cd", R, R), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype,expected", [(torch.float64, torch.float64), (torch.bfloat16, torch.float32)])
def test_collector_without_a_dtype_promotes_the_gradients_dtype_to_at_least_float32(dtype, expected):
    head, batch = _head_batch(dtype)
    for n_kfac in (None, 2):
        collector = KfacCollector({"head": head}, bias_in_A={"head": True}, n_kfac=n_kfac, lr_threshold=4)
        collector.step(head, batch, lambda m, b: (m(b[0]), b[1]), _ggn)
        f = collector.factors()["head"]
        assert f.A.dtype == f.G.dtype == expected and f.A_lowrank == (n_kfac is not None)


def test_low_rank_threshold_defaults_to_512():
    for d_in, lowrank in [(511, False), (512, True)]:  # d_A = d_in + 1 (bias folded in)
        head, batch = _head_batch(torch.float32, d_in=d_in, n=3)
        collector = KfacCollector({"head": head}, bias_in_A={"head": True}, n_kfac=2)
        collector.step(head, batch, lambda m, b: (m(b[0]), b[1]), _ggn)
        assert collector.factors()["head"].A_lowrank is lowrank


def test_augmented_activations_follow_weight_and_bias_flags():
    head = nn.Linear(2, 3)
    a = torch.arange(6.0).reshape(1, 3, 2)
    for weight_in, bias_in, expected in [
        (True, True, torch.cat([a, torch.ones(1, 3, 1)], -1)), (True, False, a),
        (False, True, torch.ones(1, 3, 1)), (False, False, torch.zeros(1, 3, 0)),
    ]:
        c = KfacCollector({"h": head}, bias_in_A={"h": bias_in}, weight_in={"h": weight_in})
        assert torch.equal(c.augmented("h", a), expected)


def test_a_module_the_forward_does_not_use_is_named():
    head, batch = _head_batch(torch.float32)
    other = nn.Linear(6, 3)
    collector = KfacCollector({"head": head, "other": other}, bias_in_A={"head": True, "other": True})
    with pytest.raises(RuntimeError, match=r"^Linear module 'other' was not used by the forward pass$"):
        collector.step(head, batch, lambda m, b: (m(b[0]), b[1]), _ggn)


class _SharedInput(nn.Module):
    """Two projections of the same tensor (like q/k of one attention block), only the first with a bias."""

    def __init__(self):
        super().__init__()
        self.q, self.k = nn.Linear(4, 3), nn.Linear(4, 3, bias=False)

    def forward(self, x):
        return self.q(x) + self.k(x)


def test_a_bias_free_module_sharing_its_input_does_not_get_the_bias_column():
    torch.manual_seed(0)
    net = _SharedInput().double()
    x = torch.randn(5, 4, dtype=torch.float64)
    f = L.collect_kfac(net, [(x, torch.zeros(5, dtype=torch.long))], {"q": net.q, "k": net.k}, curvature="ggn")
    a1 = torch.cat([x, torch.ones(5, 1, dtype=torch.float64)], 1)
    torch.testing.assert_close(f["q"].A, a1.T @ a1)
    torch.testing.assert_close(f["k"].A, x.T @ x)


def test_bias_only_block_of_a_bf16_layer_is_float32_and_counts_rows():
    head, batch = _head_batch(torch.bfloat16)
    collector = KfacCollector({"head": head}, bias_in_A={"head": True}, weight_in={"head": False},
                              dtype=torch.float32)
    collector.step(head, batch, lambda m, b: (m(b[0]), b[1]), _ggn)
    A = collector.factors()["head"].A
    assert A.dtype == torch.float32 and A.tolist() == [[9.0]]


def test_factors_before_any_step_are_refused():
    head, _ = _head_batch(torch.float32)
    with pytest.raises(ValueError, match=r"^no data was collected: the loader is empty$"):
        KfacCollector({"head": head}, bias_in_A={"head": True}).factors()


def _fwd(m, b):
    return m(b[0]), b[1]


def test_collect_kfac_defaults_eval_mode_no_bar_unit_noise_and_512_threshold(monkeypatch):
    import importlib

    kc = importlib.import_module("bayespeft.laplace.kfac_collect")
    seen, real = [], kc.progress_bar

    def record(it, *, desc, enabled):
        seen.append((desc, enabled))
        return real(it, desc=desc, enabled=enabled)

    monkeypatch.setattr(kc, "progress_bar", record)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Dropout(0.5), nn.Linear(4, 3)).double().train()
    x = torch.randn(9, 4, dtype=torch.float64)
    f = L.collect_kfac(net, [(x, torch.randn(9, 3, dtype=torch.float64))], {"1": net[1]}, forward_fn=_fwd,
                       curvature="ggn", likelihood="regression")["1"]
    a = torch.cat([x, torch.ones(9, 1, dtype=torch.float64)], 1)
    torch.testing.assert_close(f.A, a.T @ a)  # dropout off while collecting
    assert net.training  # and the mode restored
    torch.testing.assert_close(f.G, 9 * torch.eye(3, dtype=torch.float64))  # Σ_n Σ_k e_k e_kᵀ / σ², σ = 1
    assert f.bias_in_A is True and seen == [("KFAC", False)]
    for d_in, lowrank in [(511, False), (512, True)]:
        head, batch = _head_batch(torch.float32, d_in=d_in, n=3)
        g = L.collect_kfac(head, [batch], {"h": head}, forward_fn=_fwd, n_kfac=2, exclude_bias=False)["h"]
        assert g.A_lowrank is lowrank
    head, batch = _head_batch(torch.float32)
    assert L.collect_kfac(head, [batch], {"h": head}, forward_fn=_fwd, exclude_bias=True)["h"].bias_in_A is False


def test_fisher_labels_come_from_the_generator_passed():
    head, batch = _head_batch(torch.float64)

    def collect(seed):
        return L.collect_kfac(head, [batch], {"h": head}, forward_fn=_fwd,
                              generator=torch.Generator().manual_seed(seed))["h"].G

    first = collect(1)
    torch.manual_seed(123)  # the global RNG plays no part
    assert torch.equal(first, collect(1)) and not torch.equal(first, collect(2))


def test_collect_kfac_messages():
    head, batch = _head_batch(torch.float32)
    with pytest.raises(ValueError, match=r"^collect_kfac needs at least one module$"):
        L.collect_kfac(head, [batch], {})
    with pytest.raises(TypeError, match=r"^KFAC supports nn.Linear layers only; 'act' is Tanh$"):
        L.collect_kfac(head, [batch], {"act": nn.Tanh()})
    with pytest.raises(ValueError, match=r"^curvature must be 'fisher' or 'ggn', got 'hessian'$"):
        L.collect_kfac(head, [batch], {"h": head}, curvature="hessian")
    with pytest.raises(ValueError, match=r"^collect_kfac got an empty loader \(no batches\)$"):
        L.collect_kfac(head, [], {"h": head})
