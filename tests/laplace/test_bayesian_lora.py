"""Kronecker factors of the bayesian-lora drop-in against the bayesian-lora 0.0.6 package on the same inputs.

bayesian-lora samples one label per example with ``torch.multinomial``; both implementations call it exactly once
per batch, so the tests replace ``torch.multinomial`` by a fixed sequence of labels and the factors must then agree
exactly up to the documented rescaling. The documented differences (last token only, dropout left on, low-rank
scaling, crash on ``(B, d)`` inputs) are shown against answers computed directly from the data.
"""

from __future__ import annotations

import bayesian_lora
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bayespeft.laplace.bayesian_lora import calculate_kronecker_factors

N, BATCH, D_IN, HIDDEN, C = 12, 4, 4, 6, 3
N_BATCHES = N // BATCH


class FixedDraws:
    """Stand-in for ``torch.multinomial(probs, 1)``: returns the next batch of pre-drawn labels."""

    def __init__(self, labels: torch.Tensor, batch: int) -> None:
        self.chunks = list(labels.split(batch))
        self.i = 0

    def reset(self) -> None:
        self.i = 0

    def __call__(self, probs: torch.Tensor, num_samples: int, *args, **kwargs) -> torch.Tensor:
        assert num_samples == 1 and probs.shape[0] == self.chunks[self.i].shape[0]
        y = self.chunks[self.i]
        self.i += 1
        return y[:, None].to(probs.device)


@pytest.fixture
def draws(monkeypatch: pytest.MonkeyPatch) -> FixedDraws:
    g = torch.Generator().manual_seed(7)
    fixed = FixedDraws(torch.randint(0, C, (N,), generator=g), BATCH)
    monkeypatch.setattr(torch, "multinomial", fixed)
    return fixed


def mlp(dropout: float = 0.0) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout else []
    return nn.Sequential(*layers, nn.Linear(D_IN, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, C))


def one_token_loader(x2d: torch.Tensor) -> DataLoader:
    """Inputs (B, 1, d): one token, the only layout on which bayesian-lora's ``[:, -1]`` selects the right thing."""
    return DataLoader(TensorDataset(x2d[:, None, :]), batch_size=BATCH)


def last_logits(model: nn.Module, batch) -> torch.Tensor:
    return model(batch[0])[:, -1]


def data() -> torch.Tensor:
    return torch.randn(N, D_IN, generator=torch.Generator().manual_seed(3))


def theirs_to_ours(a: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """bayesian-lora's dense factors are A·B and S/(B·N) of ours (batch-mean loss, divided by #batches)."""
    return a / BATCH, s * BATCH * N


def test_factors_match_bayesian_lora_on_one_token_inputs(draws: FixedDraws) -> None:
    model, x = mlp(), data()
    ours = calculate_kronecker_factors(model, last_logits, one_token_loader(x))
    draws.reset()
    theirs = bayesian_lora.calculate_kronecker_factors(model, last_logits, one_token_loader(x))
    assert sorted(ours) == sorted(theirs) == ["0", "2"]
    for name in ours:
        a_t, s_t = theirs_to_ours(*theirs[name])
        a_o, s_o = ours[name]
        assert a_o.shape == (model[int(name)].in_features + 1,) * 2  # bias folded in, like bayesian-lora
        torch.testing.assert_close(a_o, a_t, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(s_o, s_t, rtol=1e-5, atol=1e-7)
    # first layer: A is the (bias-augmented) input second moment, computable from the data alone
    xa = torch.cat([x, torch.ones(N, 1)], dim=1)
    torch.testing.assert_close(ours["0"][0], xa.T @ xa / N, rtol=1e-5, atol=1e-6)


def test_plain_2d_inputs_work_where_bayesian_lora_crashes(draws: FixedDraws) -> None:
    model, x = mlp(), data()
    loader2d = DataLoader(TensorDataset(x), batch_size=BATCH)
    victim = mlp()
    with pytest.raises(IndexError):  # its x[:, -1] picks the last *feature* of a (B, d) input
        bayesian_lora.calculate_kronecker_factors(victim, lambda m, b: m(b[0]), loader2d)
    assert victim[0]._forward_pre_hooks  # ... and leaves its hooks on the model after the error
    draws.reset()
    ours2d = calculate_kronecker_factors(model, lambda m, b: m(b[0]), loader2d)
    draws.reset()
    ours3d = calculate_kronecker_factors(model, last_logits, one_token_loader(x))
    for name in ours2d:
        for f2, f3 in zip(ours2d[name], ours3d[name]):
            torch.testing.assert_close(f2, f3)


class SeqNet(nn.Module):
    """Token-wise Linear on (B, T, d), tanh, mean over tokens, Linear head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.inp = nn.Linear(D_IN, HIDDEN)
        self.head = nn.Linear(HIDDEN, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.inp(x)).mean(1))


def test_sequences_use_all_tokens_where_bayesian_lora_uses_the_last(draws: FixedDraws) -> None:
    T = 5
    x = torch.randn(N, T, D_IN, generator=torch.Generator().manual_seed(4))
    loader = DataLoader(TensorDataset(x), batch_size=BATCH)
    model = SeqNet()
    fwd = lambda m, b: m(b[0])  # noqa: E731
    ours = calculate_kronecker_factors(model, fwd, loader, target_module_keywords=["inp"])
    draws.reset()
    theirs = bayesian_lora.calculate_kronecker_factors(model, fwd, loader, target_module_keywords=["inp"])
    xa = torch.cat([x, torch.ones(N, T, 1)], dim=-1)
    all_tokens = torch.einsum("nti,ntj->ij", xa, xa) / (N * T)
    last_token = xa[:, -1].T @ xa[:, -1] / N_BATCHES
    torch.testing.assert_close(ours["inp"][0], all_tokens, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(theirs["inp"][0], last_token, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ours["inp"][0] * BATCH, theirs["inp"][0], rtol=0.05)
    # output-gradient factor: ours sums g gᵀ over all tokens (gradients from autograd, independent of the hooks)
    gs = []
    for (xb,), yb in zip(loader, torch.stack(draws.chunks)):
        h = model.inp(xb)
        logits = model.head(torch.tanh(h).mean(1))
        (g,) = torch.autograd.grad(nn.functional.cross_entropy(logits, yb, reduction="sum"), h)
        gs.append(g)
    g = torch.cat(gs)
    torch.testing.assert_close(ours["inp"][1], torch.einsum("nti,ntj->ij", g, g), rtol=1e-4, atol=1e-8)


def test_dropout_is_off_and_mode_restored(draws: FixedDraws) -> None:
    x = data()
    model = mlp(dropout=0.5).train()
    fwd = last_logits
    first = calculate_kronecker_factors(model, fwd, one_token_loader(x))
    assert model.training  # mode restored
    draws.reset()
    second = calculate_kronecker_factors(model, fwd, one_token_loader(x))
    draws.reset()
    no_dropout = calculate_kronecker_factors(mlp(), fwd, one_token_loader(x))
    for name, (a, s) in first.items():
        torch.testing.assert_close(a, second[name][0], rtol=0, atol=0)
        torch.testing.assert_close(s, second[name][1], rtol=0, atol=0)
    for key_drop, key_plain in (("1", "0"), ("3", "2")):
        torch.testing.assert_close(first[key_drop][0], no_dropout[key_plain][0])
        torch.testing.assert_close(first[key_drop][1], no_dropout[key_plain][1])
    # bayesian-lora: model.train() -> dropout randomises the factors, and the model is left in train mode
    model.eval()
    draws.reset()
    torch.manual_seed(10)
    t1 = bayesian_lora.calculate_kronecker_factors(model, fwd, one_token_loader(x))
    assert model.training
    draws.reset()
    torch.manual_seed(11)
    t2 = bayesian_lora.calculate_kronecker_factors(model, fwd, one_token_loader(x))
    assert not torch.allclose(t1["1"][0], t2["1"][0])


def test_lowrank_scaling_consistent_where_bayesian_lora_is_not(draws: FixedDraws) -> None:
    """Inputs in a 2-dim subspace (+ bias): rank-3 factors are exact, so low-rank and dense must agree."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(N, 2, generator=g) @ torch.randn(2, 6, generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, C))
    loader = lambda: one_token_loader(x)  # noqa: E731
    dense = calculate_kronecker_factors(model, last_logits, loader())
    draws.reset()
    low = calculate_kronecker_factors(model, last_logits, loader(), n_kfac=3, lr_threshold=7)
    a_root = low["0"][0]
    assert a_root.shape == (7, 3)  # d >= lr_threshold -> low-rank (bayesian-lora's rule)
    assert low["0"][1].shape == (C, C)  # 3 < 7: dense
    torch.testing.assert_close(a_root @ a_root.T, dense["0"][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(low["0"][1], dense["0"][1])
    # bayesian-lora: the low-rank root is a sum, the dense factor a per-batch average -> off by the number of batches
    draws.reset()
    t_dense = bayesian_lora.calculate_kronecker_factors(model, last_logits, loader())
    draws.reset()
    t_low = bayesian_lora.calculate_kronecker_factors(model, last_logits, loader(), n_kfac=3, lr_threshold=7)
    r = t_low["0"][0]
    torch.testing.assert_close((r @ r.T).float(), t_dense["0"][0] * N_BATCHES, rtol=1e-4, atol=1e-5)


def test_exact_ggn_option_and_partial_batches() -> None:
    """curvature='ggn' needs no sampling; a partial last batch is counted exactly (factors independent of batching)."""
    model, x = mlp(), data()
    full = calculate_kronecker_factors(model, last_logits, DataLoader(TensorDataset(x[:, None]), batch_size=N), curvature="ggn")
    ragged = calculate_kronecker_factors(model, last_logits, DataLoader(TensorDataset(x[:, None]), batch_size=5), curvature="ggn")
    for name in full:
        torch.testing.assert_close(full[name][0], ragged[name][0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(full[name][1], ragged[name][1], rtol=1e-5, atol=1e-7)


def test_bad_arguments_raise() -> None:
    model, x = mlp(), data()
    with pytest.raises(ValueError, match="no trainable nn.Linear module name contains any of"):
        calculate_kronecker_factors(model, last_logits, one_token_loader(x), target_module_keywords=["lora"])
    with pytest.raises(ValueError, match="n_kfac must be a positive integer"):
        calculate_kronecker_factors(model, last_logits, one_token_loader(x), n_kfac=0)
    with pytest.raises(TypeError, match="must be a list of strings"):
        calculate_kronecker_factors(model, last_logits, one_token_loader(x), target_module_keywords="lora")
    for p in model[0].parameters():
        p.requires_grad_(False)
    frozen_out = calculate_kronecker_factors(model, last_logits, one_token_loader(x), curvature="ggn")
    assert list(frozen_out) == ["2"]  # frozen layers are not targeted


def test_no_hooks_or_hook_flags_left_behind(draws: FixedDraws) -> None:
    x = data()
    ours_model, their_model = mlp(), mlp()
    calculate_kronecker_factors(ours_model, last_logits, one_token_loader(x))
    assert not ours_model[0]._forward_hooks and not ours_model[0]._forward_pre_hooks
    ours_model[0].register_backward_hook(lambda *a: None)  # e.g. what laplace-torch's ASDL backend does
    draws.reset()
    bayesian_lora.calculate_kronecker_factors(their_model, last_logits, one_token_loader(x))
    with pytest.raises(RuntimeError, match="Cannot use both regular backward hooks and full backward hooks"):
        their_model[0].register_backward_hook(lambda *a: None)
