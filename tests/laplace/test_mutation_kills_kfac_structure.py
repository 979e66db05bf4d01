"""``KfacStructure`` defaults, messages and block naming (tests/MUTATION.md, third pass, ``laplace/kfac.py``).

``laplace.fit`` always passes every option, the suite's non-Linear models have their layers at the top level (so
the owning module is found either way) and fewer than six such parameters, and no test read the block keys of
``bias="separate"`` or used a structure before fitting it.
"""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import bayespeft.laplace as L

KFAC = L.STRUCTURES.get("kfac")


def _params(model):
    return list(model.named_parameters())


def test_defaults(ref):
    model = ref.MLP().double()
    s = KFAC(model, _params(model))
    assert s.options() == {"n_kfac": None, "lr_threshold": 512, "bias": "augment"}
    assert list(s.blocks) == ["body.0", "head"]  # weight and bias of a layer in one block
    assert s.state_tensors() == {}  # nothing collected yet
    assert list(s.restrict(["head.weight", "head.bias"]).blocks) == ["head"]  # restrictable before fitting


def test_separate_bias_blocks_are_named_with_hash_bias(ref, mlp_data):
    model, X, y = mlp_data
    post = L.fit(model, ref.loader(X, y), structure="kfac", bias="separate")
    assert list(post.structure.blocks) == ["body.0", "body.0#bias", "head", "head#bias"]
    assert sorted(post.structure.state_tensors()) == sorted(
        f"{b}.{t}" for b in ("body.0", "body.0#bias", "head", "head#bias") for t in ("A", "G", "counts"))


def test_bias_option_is_checked():
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"^bias must be 'augment' or 'separate', got 'fold'$"):
        KFAC(model, _params(model), bias="fold")


def test_non_linear_parameters_are_named_with_their_innermost_module():
    model = nn.Sequential(nn.Sequential(nn.LayerNorm(4), nn.LayerNorm(4), nn.LayerNorm(4)), nn.Linear(4, 2))
    message = ("structure 'kfac' supports nn.Linear (weight and bias; includes PEFT LoRA lora_A/lora_B); parameters "
               "['0.0.weight', '0.0.bias', '0.1.weight', '0.1.bias', '0.2.weight'] belong to ['LayerNorm']. "
               "Use structure 'diag' or 'full', or a subset of Linear layers")
    with pytest.raises(TypeError, match="^" + re.escape(message) + "$"):
        KFAC(model, _params(model))


def test_non_positive_precision_names_the_block(ref, mlp_data):
    model, X, y = mlp_data
    s = L.fit(model, ref.loader(X, y), structure="kfac").structure
    delta = torch.full((len(s.groups),), -1e6, dtype=torch.float64)  # swamps the curvature: Λ < 0
    with pytest.warns(RuntimeWarning, match=r"^KFAC posterior precision of block 'body\.0' is not positive definite"), \
            pytest.raises(ValueError, match=r"^KFAC posterior precision of block 'body\.0' is not positive definite even"):
        s.logdet_precision(delta, torch.tensor(1.0, dtype=torch.float64))


def test_prior_precision_enters_the_dense_precision_in_float64(ref, mlp_data):
    model, X, y = mlp_data
    post = L.fit(model, ref.loader(X, y), structure="kfac", prior_precision=0.1)
    P1 = post.precision()
    post.prior_precision = 0.3
    diff = post.precision() - P1  # (0.3 - 0.1) I, not float32-rounded
    torch.testing.assert_close(diff, (0.3 - 0.1) * torch.eye(len(diff), dtype=torch.float64), rtol=0, atol=1e-15)


def test_separate_bias_glm_covariance_is_brute_force(ref, mlp_data):
    """``J Σ Jᵀ`` with ``bias="separate"`` (bias-only blocks have no weight columns in ``A``) against ``torch.func``
    Jacobians and the inverse of the dense precision."""
    model, X, y = mlp_data
    post = L.fit(model, ref.loader(X, y), structure="kfac", bias="separate", prior_precision=[0.5, 2.0])
    s = post.structure
    _, cov = s.glm_cov(model, (X[:6], y[:6]), post.forward_fn, post._prior.expand(len(s.groups)), post._scale())
    J = ref.brute_jacobian(model, X[:6], post.param_names)
    torch.testing.assert_close(cov, J @ torch.linalg.inv(post.precision()) @ J.transpose(1, 2), rtol=1e-8, atol=1e-10)
