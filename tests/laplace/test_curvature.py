"""Curvature structures against brute-force GGN / Fisher computed with torch.func."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bayespeft.laplace as L
from bayespeft.laplace.factors import lowrank_update


@pytest.mark.parametrize("structure", ["diag", "full"])
@pytest.mark.parametrize("likelihood", ["classification", "regression"])
def test_diag_full_equal_brute_force_ggn(ref, mlp_data, structure, likelihood):
    model, X, y = mlp_data
    yy = y if likelihood == "classification" else torch.randn(20, 3, dtype=torch.float64)
    post = L.fit(model, ref.loader(X, yy), structure=structure, likelihood=likelihood, sigma_noise=0.7)
    H = ref.brute_ggn(model, X, ref.trainable_names(model), likelihood, sigma=0.7)
    got = post.structure.H
    torch.testing.assert_close(got, H.diagonal() if structure == "diag" else H, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("structure", ["diag", "full"])
def test_conv_and_layernorm_via_torch_func(ref, structure):
    torch.manual_seed(1)
    model = ref.ConvNet().double()
    X = torch.randn(6, 1, 4, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (6,))
    post = L.fit(model, ref.loader(X, y, 4), structure=structure)
    H = ref.brute_ggn(model, X, ref.trainable_names(model))
    torch.testing.assert_close(post.structure.H, H.diagonal() if structure == "diag" else H, rtol=1e-9, atol=1e-10)


def test_fisher_uses_one_sampled_label_per_example(ref, mlp_data):
    model, X, y = mlp_data
    post = L.fit(model, ref.loader(X, y, 20), structure="full", curvature="fisher", seed=3)
    with torch.no_grad():
        p = torch.softmax(model(X), -1)
    ys = torch.multinomial(p, 1, generator=torch.Generator().manual_seed(3)).squeeze(1)
    J = ref.brute_jacobian(model, X, ref.trainable_names(model))
    g = torch.einsum("nc,ncd->nd", p - nn.functional.one_hot(ys, 3).double(), J)  # ∇θ CE(f, ŷ) per example
    torch.testing.assert_close(post.structure.H, g.T @ g)
    # different seeds give different (unbiased) estimates of the GGN
    other = L.fit(model, ref.loader(X, y, 20), structure="full", curvature="fisher", seed=4)
    assert not torch.allclose(other.structure.H, post.structure.H)


def _block_mask(post, d):
    mask = torch.zeros(d, d, dtype=torch.bool)
    for b in post.structure.blocks.values():
        idx = b["index"].reshape(-1)
        mask[idx[:, None], idx[None, :]] = True
    return mask


@pytest.mark.parametrize("bias", ["augment", "separate"])
def test_kfac_exact_for_single_example(ref, mlp_data, bias):
    model, X, y = mlp_data
    post = L.fit(model, ref.loader(X[:1], y[:1]), structure="kfac", bias=bias)
    H = ref.brute_ggn(model, X[:1], ref.trainable_names(model))
    d = H.shape[0]
    Hk = post.precision() - torch.eye(d, dtype=H.dtype)  # prior precision 1
    mask = _block_mask(post, d)
    torch.testing.assert_close(Hk, torch.where(mask, H, torch.zeros_like(H)), rtol=1e-9, atol=1e-10)
    if bias == "augment":  # one block per Linear including the weight-bias cross terms
        assert len(post.structure.blocks) == 2


class TokenwiseLinear(nn.Module):
    """One Linear applied at T positions; the T outputs form the (B, T·d_out) regression output."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x):
        return self.lin(x).reshape(x.shape[0], -1)


def test_kfac_sequence_sums_all_positions_and_is_exact_in_expand_setting(ref):
    torch.manual_seed(0)
    model = TokenwiseLinear().double()
    X = torch.randn(1, 3, 3, dtype=torch.float64)  # B=1, T=3
    Y = torch.randn(1, 6, dtype=torch.float64)
    post = L.fit(model, ref.loader(X, Y), structure="kfac", likelihood="regression", sigma_noise=0.5)
    F = post.structure.factors["lin"]
    assert F.n_rows == 3 and F.n_examples == 1
    H = ref.brute_ggn(model, X, ["lin.weight", "lin.bias"], "regression", sigma=0.5)
    d = H.shape[0]
    torch.testing.assert_close(post.precision() - torch.eye(d, dtype=H.dtype), H, rtol=1e-9, atol=1e-10)
    # A is summed over every position, not only the last one
    a = torch.cat([X[0], torch.ones(3, 1, dtype=X.dtype)], 1)
    torch.testing.assert_close(F.A, a.T @ a)


def test_kfac_sequence_in_reduce_setting_is_the_documented_expand_approximation(ref):
    torch.manual_seed(0)
    model = ref.SeqNet().double()
    X = torch.randn(1, 4, 6, dtype=torch.float64)
    y = torch.tensor([1])
    post = L.fit(model, ref.loader(X, y), structure="kfac")
    F = post.structure.factors["b"]
    with torch.no_grad():
        a = torch.tanh(model.a(X))[0]
    a = torch.cat([a, torch.ones(4, 1, dtype=a.dtype)], 1)
    torch.testing.assert_close(F.A, a.T @ a)
    # G: Σ_t Σ_k g g^T with g_t = W_headᵀ R_k / T (mean pooling)
    with torch.no_grad():
        p = torch.softmax(model(X), -1)[0]
    R = torch.diag(p.sqrt()) - p[:, None] * p.sqrt()[None, :]
    g = model.head.weight.detach().T @ R / 4
    torch.testing.assert_close(F.G, 4 * g @ g.T)


def test_lowrank_factor_single_batch_is_best_rank_k_and_full_rank_equals_kfac(ref, mlp_data):
    model, X, y = mlp_data
    Xa = torch.randn(30, 8, dtype=torch.float64)
    Lr = lowrank_update(None, Xa, 3)
    evals, evecs = torch.linalg.eigh(Xa.T @ Xa)
    best = (evecs[:, -3:] * evals[-3:]) @ evecs[:, -3:].T
    torch.testing.assert_close(Lr @ Lr.T, best)
    # incremental updates with rank >= true rank reproduce the dense sum
    L2 = lowrank_update(lowrank_update(None, Xa[:4], 8), Xa[4:9], 8)
    torch.testing.assert_close(L2 @ L2.T, Xa[:9].T @ Xa[:9])
    dense = L.fit(model, ref.loader(X, y), structure="kfac")
    lowr = L.fit(model, ref.loader(X, y), structure="lowrank_kfac", n_kfac=6, lr_threshold=2)
    assert lowr.structure.factors["body.0"].A_lowrank
    torch.testing.assert_close(lowr.precision(), dense.precision())
    torch.testing.assert_close(lowr.log_marginal_likelihood(), dense.log_marginal_likelihood())


def test_collect_kfac_public_api(ref, mlp_data):
    model, X, y = mlp_data
    mods = {"body.0": model.body[0], "head": model.head}
    f = L.collect_kfac(model, ref.loader(X, y), mods, curvature="ggn")
    post = L.fit(model, ref.loader(X, y), structure="kfac")
    for k in mods:
        torch.testing.assert_close(f[k].A, post.structure.factors[k].A)
        torch.testing.assert_close(f[k].G, post.structure.factors[k].G)
        assert f[k].n_examples == 20 and f[k].n_rows == 20
    nb = L.collect_kfac(model, ref.loader(X, y), mods, exclude_bias=True, n_kfac=2, lr_threshold=4,
                        generator=torch.Generator().manual_seed(0))
    assert nb["body.0"].A.shape == (4, 4) and nb["head"].A.shape == (5, 2) and nb["head"].A_lowrank
    with pytest.raises(TypeError, match="nn.Linear"):
        L.collect_kfac(model, ref.loader(X, y), {"act": model.body[1]})
    with pytest.raises(ValueError, match="empty loader"):
        L.collect_kfac(model, [], mods)
