"""``KfacStructure.restrict`` / ``glm_cov_parts`` messages and a restricted structure reloaded (tests/MUTATION.md,
fifth pass).

The layer-wise code only restricts to whole layers and passes parts made of whole layers, so the two refusals were
never raised with their messages; a restricted structure was never reloaded from its own state. References: the
messages as written in the module, and the precision of the restricted structure before the reload.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bayespeft.laplace as L

F64 = torch.float64


def _three_layer_post():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    X = torch.randn(10, 3, dtype=F64)
    y = torch.randint(0, 3, (10,))
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=5)
    return L.fit(model, data, structure="kfac", prior_precision=0.7), model, X, y


def test_restriction_to_part_of_a_layer_names_the_block_and_four_names():
    post, *_ = _three_layer_post()
    names = ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight"]  # 4.bias left out
    msg = ("KFAC block '4' (weight and bias of one Linear) is only partly in the restriction "
           "['0.bias', '0.weight', '2.bias', '2.weight']; restrict to whole layers")
    with pytest.raises(ValueError) as err:
        post.structure.restrict(names)
    assert str(err.value) == msg


def test_glm_cov_parts_refuses_a_block_split_across_parts():
    post, model, X, y = _three_layer_post()
    s = post.structure
    delta, scale = post._prior.expand(len(s.groups)), post._scale()
    with pytest.raises(ValueError) as err:
        s.glm_cov_parts(model, (X, y), post.forward_fn, delta, scale, [["4.weight"], ["4.bias", "2.weight", "2.bias"]])
    assert str(err.value) == "KFAC block '4' must lie in exactly one part, found parts ['0', '1']"
    with pytest.raises(ValueError) as err:  # the bias in no part: None is one of the owners
        s.glm_cov_parts(model, (X, y), post.forward_fn, delta, scale, [["4.weight"]])
    assert str(err.value) == "KFAC block '4' must lie in exactly one part, found parts ['0', 'None']"


def test_a_restricted_structure_reloads_its_own_state():
    """``load_state_tensors`` finishes with ``finalize``: on a restricted copy it must find no collector left over
    and give the same precision as before the reload."""
    post, *_ = _three_layer_post()
    sub = post.structure.restrict(["2.weight", "2.bias", "4.weight", "4.bias"])
    delta, scale = torch.full((len(sub.groups),), 0.7, dtype=F64), post._scale()
    before = sub.precision_matrix(delta, scale)
    sub.load_state_tensors({k: v.clone() for k, v in sub.state_tensors().items()})
    torch.testing.assert_close(sub.precision_matrix(delta, scale), before, rtol=0, atol=0)
    full = post.precision()
    idx = post.structure.index_of(["2.weight", "2.bias", "4.weight", "4.bias"])
    torch.testing.assert_close(before, full[idx[:, None], idx[None, :]], rtol=1e-12, atol=1e-12)


def test_reloaded_factors_equal_the_fitted_ones_field_by_field():
    """Every field of each block's ``KronFactors`` survives ``state_tensors`` → ``load_state_tensors`` (``bias_in_A``
    included: it is True for the ``augment`` blocks, whose ``A`` carries the constant-1 coordinate)."""
    post, model, *_ = _three_layer_post()
    s = post.structure
    fresh = L.STRUCTURES.get("kfac")(model, list(model.named_parameters()), **s.options())
    fresh.load_state_tensors(s.state_tensors())
    assert list(fresh.factors) == list(s.factors) == ["0", "2", "4"]
    for k, F in s.factors.items():
        G = fresh.factors[k]
        assert F.bias_in_A is True and G.bias_in_A is True
        assert (G.n_examples, G.n_rows, G.A_lowrank, G.G_lowrank) == (F.n_examples, F.n_rows, F.A_lowrank, F.G_lowrank)
        assert torch.equal(G.A, F.A) and torch.equal(G.G, F.G)


def test_bf16_model_kfac_glm_predictive_runs_in_the_structures_float32():
    """A bf16 model's KFAC structure is float32; its taps (bf16 activations and output gradients) are cast to it
    before the covariance contraction. Reference: the same weights in a float32 model (bf16 forward rounding only)."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).bfloat16()
    X = torch.randn(6, 4).bfloat16()
    y = torch.randint(0, 3, (6,))
    post = L.fit(model, [(X, y)], structure="kfac", prior_precision=1.0)
    assert post.structure.dtype == torch.float32
    probs = post.predict(X)
    model32 = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    model32.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    want = L.fit(model32, [(X.float(), y)], structure="kfac", prior_precision=1.0).predict(X.float())
    assert probs.dtype == torch.float32
    torch.testing.assert_close(probs, want, rtol=0, atol=5e-3)  # measured 5e-4
