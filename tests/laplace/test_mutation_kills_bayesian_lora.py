"""``bayespeft.laplace.bayesian_lora`` options, boundaries and messages (tests/MUTATION.md, fourth pass).

References written out: with the GGN of a single Linear head, ``A = (1/R) Σ ã ãᵀ`` of the inputs (with a trailing 1
unless ``exclude_bias``) and ``S = Σ_k R_k R_kᵀ`` of the cotangents.
"""

from __future__ import annotations

import importlib
import re

import pytest
import torch
from torch import nn

from bayespeft.laplace.bayesian_lora import calculate_kronecker_factors

F64 = torch.float64


def _head(d_in=3, n=6):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(d_in, 2)).double()
    x = torch.randn(n, d_in, dtype=F64)
    return model, [x[: n // 2], x[n // 2:]], x


def _call(model, batch):
    return model(batch)


def test_exclude_bias_leaves_the_constant_column_out():
    model, loader, x = _head()
    A, _ = calculate_kronecker_factors(model, _call, loader, exclude_bias=True, curvature="ggn")["0"]
    torch.testing.assert_close(A, x.T @ x / 6)
    A1, _ = calculate_kronecker_factors(model, _call, loader, curvature="ggn")["0"]
    a = torch.cat([x, torch.ones(6, 1, dtype=F64)], 1)
    torch.testing.assert_close(A1, a.T @ a / 6)


def test_a_rank_as_large_as_the_side_is_stored_as_the_dense_gram_matrix():
    model, loader, x = _head()
    a = torch.cat([x, torch.ones(6, 1, dtype=F64)], 1)
    for n_kfac in (4, 5):  # d_A = 4: a root with k >= d columns is exact, kept as A itself (square = Gram)
        A, _ = calculate_kronecker_factors(model, _call, loader, n_kfac=n_kfac, lr_threshold=2, curvature="ggn")["0"]
        assert A.shape == (4, 4)
        torch.testing.assert_close(A, a.T @ a / 6)


def test_low_rank_from_a_side_of_lr_threshold_default_512_and_rank_one_allowed():
    for d_in, lowrank in [(510, False), (511, True)]:  # d_A = d_in + 1 >= 512: a (d_A, 2) root
        model, loader, _ = _head(d_in=d_in, n=4)
        A, _ = calculate_kronecker_factors(model, _call, loader, n_kfac=2)["0"]
        assert A.shape == ((d_in + 1, 2) if lowrank else (d_in + 1, d_in + 1))
    model, loader, _ = _head()
    A, S = calculate_kronecker_factors(model, _call, loader, n_kfac=1, lr_threshold=1)["0"]
    assert A.shape == (4, 1) and S.shape == (2, 1)


def test_progress_bar_only_when_asked(monkeypatch):
    kc = importlib.import_module("bayespeft.laplace.kfac_collect")
    seen, real = [], kc.progress_bar

    def record(it, *, desc, enabled):
        seen.append(enabled)
        return real(it, desc=desc, enabled=enabled)

    monkeypatch.setattr(kc, "progress_bar", record)
    model, loader, _ = _head()
    calculate_kronecker_factors(model, _call, loader)
    calculate_kronecker_factors(model, _call, loader, use_tqdm=True)
    assert seen == [False, True]


@pytest.mark.parametrize("bad", [0, 2.5, "3"])
def test_lr_threshold_must_be_a_positive_integer(bad):
    model, loader, _ = _head()
    with pytest.raises(ValueError, match=re.escape(f"lr_threshold must be a positive integer, got {bad!r}") + "$"):
        calculate_kronecker_factors(model, _call, loader, lr_threshold=bad)


def test_no_trainable_target_lists_eight_linear_modules():
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(10)]).requires_grad_(False)
    names = [str(i) for i in range(8)]
    with pytest.raises(ValueError, match=re.escape(f"no trainable nn.Linear module name contains any of ['']; nn.Linear "
                                                   f"modules include {names} (only modules with requires_grad weights "
                                                   "are targeted)") + "$"):
        calculate_kronecker_factors(model, _call, [torch.zeros(1, 2)])


def test_fisher_labels_come_from_the_generator_passed():
    model, loader, _ = _head()

    def S(seed):
        return calculate_kronecker_factors(model, _call, loader, generator=torch.Generator().manual_seed(seed))["0"][1]

    first = S(1)
    torch.manual_seed(123)  # the global RNG plays no part
    assert torch.equal(first, S(1)) and not torch.equal(first, S(2))


def test_a_low_rank_s_root_as_wide_as_its_side_is_stored_dense():
    model, loader, _ = _head()
    dense = calculate_kronecker_factors(model, _call, loader, curvature="ggn")["0"][1]
    S = calculate_kronecker_factors(model, _call, loader, n_kfac=4, lr_threshold=2, curvature="ggn")["0"][1]
    torch.testing.assert_close(S, dense)  # side 2 >= lr_threshold, rank 4 >= 2: exact, kept as the Gram matrix


def test_dense_factors_are_factorised_in_float64_then_cast():
    from bayespeft.laplace.bayesian_lora import cholesky_decompose_small_factors

    torch.manual_seed(0)
    X = torch.randn(7, 5)
    A = X.T @ X + 1e-3 * torch.eye(5)
    S = torch.tensor([[2.0, 0.5], [0.5, 1.0]])
    out = cholesky_decompose_small_factors({"m": (A, S)}, 512, "cpu", torch.float32)["m"]
    ref = torch.linalg.cholesky(0.5 * (A.double() + A.double().T)).float()
    assert out[0].dtype == torch.float32 and torch.equal(out[0], ref)


def test_roots_are_kept_when_decomposed_again():
    from bayespeft.laplace.bayesian_lora import cholesky_decompose_small_factors

    L = torch.tensor([[1.0, 0.0], [0.5, 1.0]], dtype=F64)
    tiny = torch.tensor([[1.0, 0.0], [1e-9, 1.0]], dtype=F64)  # lower-triangular, symmetric only up to atol 1e-9
    out = cholesky_decompose_small_factors({"m": (L, tiny)}, 512, "cpu", F64)["m"]
    assert torch.equal(out[0], L) and torch.equal(out[1], tiny)


def test_decomposition_messages_name_the_module():
    from bayespeft.laplace.bayesian_lora import cholesky_decompose_small_factors

    eye = torch.eye(2, dtype=F64)
    with pytest.raises(ValueError, match=r"^Kronecker factor of 'm' must be a matrix, got shape \(1, 2, 2\)$"):
        cholesky_decompose_small_factors({"m": (eye[None], eye)}, 512, "cpu", F64)
    with pytest.raises(ValueError, match=r"^square Kronecker factor of 'm' is neither symmetric \(dense\) nor "
                       r"lower-triangular \(Cholesky\)$"):
        cholesky_decompose_small_factors({"m": (torch.tensor([[1.0, 2.0], [1.0, 1.0]], dtype=F64), eye)}, 512, "cpu", F64)
    # indefinite: jitters 1e-10 · 10^j · mean|diag| for j < 11, the largest 1.0
    with pytest.raises(ValueError, match=r"^Kronecker factor of 'm' of shape \(2, 2\) is not positive definite even "
                       r"after jitter \(largest jitter tried 1\); the factor is not positive semi-definite$"):
        cholesky_decompose_small_factors({"m": (torch.diag(torch.tensor([1.0, -1.0], dtype=F64)), eye)}, 512, "cpu", F64)


def test_stable_cholesky_tries_a_thousand_jitters():
    from bayespeft.laplace.bayesian_lora import stable_cholesky

    def offdiag(b):  # zero diagonal: the i-th try adds 1e-8 · 1.1^i, positive definite once that exceeds |b|
        return torch.tensor([[0.0, b], [b, 0.0]], dtype=F64)

    L = stable_cholesky(offdiag(1e-8 * 1.1**998.5))  # the last try, i = 999
    assert L[0, 0] == pytest.approx((1e-8 * 1.1**999) ** 0.5, rel=1e-12)
    with pytest.raises(ValueError, match=r"^stable_cholesky input of shape \(2, 2\) is not positive definite even "
                       r"after jitter \(largest jitter tried 2\.\d+e\+33\)$"):
        stable_cholesky(offdiag(1e-8 * 1.1**999.5))  # would need i = 1000


def test_evidence_refuses_gram_matrices_and_non_matrices_by_name():
    from bayespeft.laplace.bayesian_lora import model_evidence

    model, _, _ = _head()
    gram = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=F64)
    root = torch.eye(4, dtype=F64)
    with pytest.raises(ValueError, match=re.escape(
            "factor S of '0' is a square non-triangular matrix, i.e. a dense Gram matrix; call "
            "cholesky_decompose_small_factors(factors, ...) first (model_evidence and variance take roots R, R Rᵀ = "
            "factor)") + "$"):
        model_evidence(model, 0.0, {"0": (root, gram)}, 0, 0, 1.0)
    with pytest.raises(ValueError, match=r"^factor A of '0' must be a matrix, got shape \(1, 4, 4\)$"):
        model_evidence(model, 0.0, {"0": (root[None], torch.eye(2, dtype=F64))}, 0, 0, 1.0)


def _roots(model):
    from bayespeft.laplace.bayesian_lora import cholesky_decompose_small_factors

    _, loader, _ = _head()
    factors = calculate_kronecker_factors(model, _call, loader, curvature="ggn")
    return cholesky_decompose_small_factors(factors, 512, "cpu", F64)


def test_evidence_is_float64_whatever_the_prior_variance_is_given_as():
    from bayespeft.laplace.bayesian_lora import model_evidence

    model, _, _ = _head()
    roots = _roots(model)
    s2_32 = torch.tensor(0.3, dtype=torch.float32, requires_grad=True)
    s2 = float(s2_32.detach())  # 0.3 rounded to float32, as a Python float
    ref = model_evidence(model, -2.0, roots, 0, 0, torch.tensor(s2, dtype=F64))
    got = model_evidence(model, -2.0, roots, 0, 0, s2_32)
    assert got.dtype == F64 and float(got.detach()) == pytest.approx(float(ref), rel=1e-15, abs=0)
    got.backward()
    assert s2_32.grad is not None
    exact = model_evidence(model, -2.0, roots, 0, 0, 0.3)  # a float is taken in float64, not float32
    assert float(exact) == pytest.approx(float(model_evidence(model, -2.0, roots, 0, 0, torch.tensor(0.3, dtype=F64))),
                                         rel=1e-15, abs=0)
    assert float(exact) != float(ref)
    with pytest.raises(ValueError, match=r"^s2 \(prior variance\) must be one positive number, got 0"):
        model_evidence(model, -2.0, roots, 0, 0, 0.0)


class _WeightOnly(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(2, 3, dtype=F64))


def test_evidence_messages_for_factors_that_do_not_fit_the_model():
    from bayespeft.laplace.bayesian_lora import model_evidence

    model, _, _ = _head()
    roots = _roots(model)
    with pytest.raises(ValueError, match=r"^factors name module 'other', which the model does not have$"):
        model_evidence(model, 0.0, {"other": roots["0"]}, 0, 0, 1.0)
    wide = nn.Sequential(nn.Linear(5, 2)).double()
    with pytest.raises(ValueError, match=re.escape("factor A of '0' has side 4, but the layer has 5 inputs (expected 5 "
                                                   "or 6 with bias)") + "$"):
        model_evidence(wide, 0.0, roots, 0, 0, 1.0)
    for no_bias in (nn.Sequential(nn.Linear(3, 2, bias=False)).double(), nn.Sequential(_WeightOnly())):
        with pytest.raises(ValueError, match=r"^factor A of '0' includes a bias coordinate but the layer has no bias$"):
            model_evidence(no_bias, 0.0, roots, 0, 0, 1.0)


def test_evidence_of_a_float32_layer_against_the_dense_kronecker_formula():
    """``LL − ‖θ‖²/(2 s2) + ½ d log(1/s2) − ½ log det(I/s2 + S ⊗ A)``, with ``S ⊗ A`` formed densely (8 × 8)."""
    from bayespeft.laplace.bayesian_lora import model_evidence

    model64, _, _ = _head()
    roots = _roots(model64)
    model = nn.Sequential(nn.Linear(3, 2))
    model.load_state_dict(model64.state_dict())  # float32 copies of values exactly representable in float32
    with torch.no_grad():
        model64[0].weight.copy_(model[0].weight.double())
        model64[0].bias.copy_(model[0].bias.double())
    RA, RS = roots["0"]
    P = torch.eye(8, dtype=F64) / 0.7 + torch.kron(RS @ RS.T, RA @ RA.T)
    theta = torch.cat([model64[0].weight.reshape(-1), model64[0].bias]).detach()
    LL = float(torch.tensor(-2.1, dtype=torch.float32))
    expected = LL - theta.square().sum() / 1.4 + 4 * torch.log(torch.tensor(1 / 0.7, dtype=F64)) - 0.5 * torch.linalg.slogdet(P)[1]
    for ll in (-2.1, torch.tensor(-2.1, dtype=torch.float32)):  # a float is taken in float64
        got = model_evidence(model, ll, roots, 0, 0, 0.7)
        want = expected if torch.is_tensor(ll) else expected + (-2.1 - LL)
        assert got.dtype == F64 and float(got) == pytest.approx(float(want), rel=1e-13, abs=0)


class _Seq(nn.Module):
    """Outputs ``(B, T, C)`` logits: a Linear over each of T positions."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 4).double()

    def forward(self, x):
        return self.lin(x)


def test_jacobian_mean_default_takes_the_last_position_and_messages():
    from bayespeft.laplace.bayesian_lora import jacobian_mean

    torch.manual_seed(0)
    net = _Seq()
    x = torch.randn(2, 5, 3, dtype=F64)
    jac, f_mu = jacobian_mean(net, {"x": x}, target_ids=torch.tensor([3, 1]))
    with torch.no_grad():
        torch.testing.assert_close(f_mu, net(x)[:, -1][:, [3, 1]])
    # d f_c / d W[c', i] = [c' = target c] · x_last,i
    torch.testing.assert_close(jac["lin.weight"][:, 0, 3], x[:, -1])
    with pytest.raises(ValueError, match=r"^output_callback must return logits of shape \(B, C\), got \(2, 5, 4\)$"):
        jacobian_mean(net, {"x": x}, output_callback=lambda out: out)
    net.requires_grad_(False)
    with pytest.raises(ValueError, match=r"^the model has no trainable parameter \(requires_grad=True\) to take "
                       r"Jacobians of$"):
        jacobian_mean(net, {"x": x})


def test_variance_messages_name_the_layer_and_the_jacobian_entry():
    from bayespeft.laplace.bayesian_lora import variance

    model, _, x = _head()
    roots = _roots(model)
    J = {"0.weight": torch.zeros(6, 2, 2, 3, dtype=F64), "0.bias": torch.zeros(6, 2, 2, dtype=F64)}
    others = {f"0.{k}.weight": torch.zeros(1) for k in "abcde"}
    with pytest.raises(ValueError, match=re.escape("no Jacobian entry '0.weight' for the Kronecker factors of '0' "
                                                   "(entries containing it: ['0.a.weight', '0.b.weight', '0.c.weight', "
                                                   "'0.d.weight'])") + "$"):
        variance(None, {"x.weight": torch.zeros(1), **others}, roots, 1.0, 2, 0, 0, "cpu")
    for bad in (torch.zeros(6, 2, 3, dtype=F64), torch.zeros(6, 2, 5, 3, dtype=F64)):
        with pytest.raises(ValueError, match=re.escape(f"Jacobian '0.weight' has shape {tuple(bad.shape)}; expected "
                                                       "(B, C, 2, in) to match factor S") + "$"):
            variance(None, {**J, "0.weight": bad}, roots, 1.0, 2, 0, 0, "cpu")
    with pytest.raises(ValueError, match=re.escape("factor A of '0' includes a bias but the Jacobian has no '0.bias' "
                                                   "(make the bias trainable, or compute the factors with "
                                                   "exclude_bias=True)") + "$"):
        variance(None, {"0.weight": J["0.weight"]}, roots, 1.0, 2, 0, 0, "cpu")
    with pytest.raises(ValueError, match=r"^factor A of '0' has side 4, but Jacobian '0.weight' has 5 inputs$"):
        variance(None, {**J, "0.weight": torch.zeros(6, 2, 2, 5, dtype=F64)}, roots, 1.0, 2, 0, 0, "cpu")
    gram = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=F64)
    with pytest.raises(ValueError, match=r"^factor S of '0' is a square non-triangular matrix"):
        variance(None, J, {"0": (roots["0"][0], gram)}, 1.0, 2, 0, 0, "cpu")


def test_linearized_predictive_defaults_generator_and_messages():
    from bayespeft.laplace.bayesian_lora import linearized_predictive, variance

    f = torch.tensor([[0.5, -0.2, 0.1]], dtype=F64)
    v = torch.diag(torch.tensor([[0.3, 0.2, 0.4]], dtype=F64)[0])[None]

    def draw(seed, **kw):
        return linearized_predictive(f, v, generator=torch.Generator().manual_seed(seed), **kw)

    first = draw(0)
    torch.manual_seed(9)  # the global RNG plays no part
    assert torch.equal(first, draw(0)) and torch.equal(first, draw(0, n_samples=10_000))
    assert not torch.equal(first, draw(0, n_samples=10_001))
    one = draw(1, n_samples=1)  # one draw: softmax(f + L ε) with ε the generator's first normals
    eps = torch.randn(1, 1, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    torch.testing.assert_close(one, torch.softmax(f + eps[0] * v.diagonal(dim1=-2, dim2=-1).sqrt(), -1))
    with pytest.raises(ValueError, match=r"^n_samples must be >= 1, got 0$"):
        linearized_predictive(f, v, n_samples=0)
    for mu, var in ((f[0], v), (f, v[:, :2, :2]), (f, torch.zeros(1, 3, 2, dtype=F64))):
        with pytest.raises(ValueError, match=re.escape(f"f_mu must be (B, C) and f_var (B, C, C); got {tuple(mu.shape)} "
                                                       f"and {tuple(var.shape)}") + "$"):
            linearized_predictive(mu, var)
    with pytest.raises(ValueError, match=r"^factors is empty$"):
        variance(None, {}, {}, 1.0, 3, 0, 0, "cpu")
    model, _, _ = _head()
    J = {"0.weight": torch.zeros(6, 3, 2, 3, dtype=F64), "0.bias": torch.zeros(6, 3, 2, dtype=F64)}
    with pytest.raises(ValueError, match=r"^n_logits=2 but the Jacobian of '0' has 3 logits$"):
        variance(None, J, _roots(model), 1.0, 2, 0, 0, "cpu")
