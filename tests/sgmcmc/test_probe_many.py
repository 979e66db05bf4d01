"""``ProbeDiagnostics.many``: several parameter sets (chains kept at the same step) in one batched forward.

Independent answer: the probe scalars computed by hand per parameter set (``x Wᵀ + b``, log-softmax, norms), and the
one-set call; a model ``vmap`` cannot run (a Python-number read in its forward) must give the same via the fallback.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from bayespeft.sgmcmc.probe import ProbeDiagnostics


class Net(nn.Module):
    def __init__(self, item_in_forward: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(3, 4)
        self.drop = nn.Dropout(0.5)
        self.item_in_forward = item_in_forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.drop(self.lin(x))
        if self.item_in_forward:
            out = out * (1.0 + 0.0 * float(out.sum()))  # a host read: impossible under vmap
        return out


@pytest.mark.parametrize("item_in_forward", [False, True])
def test_many_equals_hand_computed_scalars_per_set(item_in_forward: bool) -> None:
    model = Net(item_in_forward).train()
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    sets = [{"lin.weight": torch.randn(4, 3, generator=torch.Generator().manual_seed(2 + 2 * c)),
             "lin.bias": torch.randn(4, generator=torch.Generator().manual_seed(3 + 2 * c))} for c in range(3)]
    probe = ProbeDiagnostics(model, (x, y), n_projections=2, seed=5)
    got = probe.many(sets)
    assert model.training and len(got) == 3
    for out, p in zip(got, sets):
        logp = F.log_softmax(x @ p["lin.weight"].T + p["lin.bias"], -1)[torch.arange(6), y]  # eval mode: no dropout
        flat = torch.cat([p["lin.weight"].reshape(-1), p["lin.bias"]])
        assert out["loglik"] == pytest.approx(float(logp.mean()), rel=1e-6)
        assert out["param_norm"] == pytest.approx(float(flat.norm()), rel=1e-6)
        assert out["true_class_prob"] == pytest.approx(logp.exp().tolist(), rel=1e-6)
        single = probe(p)
        assert out.keys() == single.keys()
        for k in out:
            assert out[k] == pytest.approx(single[k], rel=1e-5, abs=1e-7)
