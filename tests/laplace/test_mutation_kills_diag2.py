"""Curvature of a bf16 model summed in the structure's float32 (tests/MUTATION.md, fifth pass; ``diag.py``
``accumulate`` 20, ``full.py`` ``accumulate`` 21 of earlier passes, called "bf16 only, not killed" there).

A bf16 ``Linear(2, 2)`` with regression GGN cotangents ``e_k / σ`` (σ = 1): the per-example gradients are the
inputs themselves, exact in bf16 (``1 + 2⁻⁷``, ``1 + 3·2⁻⁷``). Their squares and products need up to 16 mantissa
bits: exact in float32, rounded in bf16 (``(1 + 2⁻⁷)² = 1 + 2⁻⁶ + 2⁻¹⁴`` → ``1 + 2⁻⁶``). Reference: the GGN
``Σ_n J_nᵀ J_n`` of the same weights and inputs in float64 (``conftest.brute_ggn``, ``torch.func``), plus δ = 1.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bayespeft.laplace as L


@pytest.mark.parametrize("structure", ["diag", "full"])
def test_bf16_gradients_are_squared_and_summed_in_float32(ref, structure):
    torch.manual_seed(0)
    model = nn.Linear(2, 2).bfloat16()
    a, b = 1 + 2**-7, 1 + 3 * 2**-7
    X = torch.tensor([[a, b], [b, a], [a, a]], dtype=torch.bfloat16)
    post = L.fit(model, [(X, torch.zeros(3, 2, dtype=torch.bfloat16))], structure=structure,
                 likelihood="regression", prior_precision=1.0)
    model64 = nn.Linear(2, 2).double()
    model64.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    ggn = ref.brute_ggn(model64, X.double(), post.param_names, likelihood="regression")
    want = ggn + torch.eye(6, dtype=torch.float64)
    if structure == "diag":
        want = torch.diag(want.diagonal())
    P = post.precision()
    assert P.dtype == torch.float32
    torch.testing.assert_close(P.double(), want, rtol=0, atol=1e-6)
