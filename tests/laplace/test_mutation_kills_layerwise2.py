"""``LayerwiseLaplace`` prior tuning and ``predict_loader`` options (tests/MUTATION.md, fifth pass).

These mutants counted as killed in the fourth pass (b) only because the layer-wise test modules cache fitted
objects across tests (``functools.lru_cache``) and an earlier mutant had changed a cached object; run alone, or
with the caches cleared, they survived. Everything here is built per test. References: each group's restricted
posterior tuned by :meth:`LaplacePosterior.optimize_prior` (the per-group path), the documented defaults passed
explicitly, the messages as written, and the calls the predictive makes (spied).
"""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import bayespeft.laplace.layerwise as layerwise_mod
from bayespeft.laplace.layerwise import LayerwiseLaplace
from layerwise_nets import loader, mlp


def _per_group(lw: LayerwiseLaplace) -> dict[str, float]:
    out = {}
    for g in lw.groups:
        post = lw.posterior.restrict(list(g.param_names))
        out[g.name] = float(post.optimize_prior("marglik", progress=False)[0])  # 100 Adam steps, lr 0.1
    return out


@pytest.mark.parametrize("prior", [0.5, [0.5, 1.0, 2.0, 4.0]])
def test_joint_tuning_equals_each_groups_own_evidence_maximisation(prior):
    """``tune_priors()`` (one joint Adam loop for a block-diagonal structure) gives each group's own restricted-
    evidence maximiser from its fitted value, also when the fitted prior is per group (each group then starts from
    its own value: the bug fixed in this pass started every group from the first group's)."""
    lw = LayerwiseLaplace.fit(mlp(), loader(), structure="diag", prior_precision=prior, progress=False)
    want = _per_group(LayerwiseLaplace.fit(mlp(), loader(), structure="diag", prior_precision=prior, progress=False))
    got = lw.tune_priors()
    assert list(got) == ["0", "2", "4", "6"]
    for k in got:
        assert got[k] == pytest.approx(want[k], rel=1e-9), k


def test_a_fixed_prior_must_be_positive():
    lw = LayerwiseLaplace.fit(mlp(), loader(), structure="diag", progress=False)
    with pytest.raises(ValueError, match=r"^prior precision must be > 0 or 'marglik', got 0$"):
        lw.tune_priors(0)
    assert lw.tune_priors(0.25) == {"0": 0.25, "2": 0.25, "4": 0.25, "6": 0.25}


def test_per_group_tuning_shows_no_bar_whatever_the_environment_says(monkeypatch, capsys):
    """``full`` is not block-diagonal: one ``optimize_prior`` per group, each with ``progress=False``."""
    import bayespeft.laplace.posterior as posterior_mod

    lw = LayerwiseLaplace.fit(mlp(), loader(), structure="full", progress=False)
    monkeypatch.setenv("BAYESPEFT_PROGRESS", "bar")
    asked, real_bar = [], posterior_mod.progress_bar

    def bar(it, desc, enabled):
        asked.append((desc, enabled))
        return real_bar(it, desc=desc, enabled=enabled)

    monkeypatch.setattr(posterior_mod, "progress_bar", bar)
    lw.tune_priors(n_steps=3)
    assert asked == [("prior (marglik)", False)] * 4
    assert capsys.readouterr().err == ""


def _same(a, b) -> None:
    torch.testing.assert_close(a.map_probs, b.map_probs, rtol=0, atol=0)
    assert a.paths == b.paths and len(a.probs) == len(b.probs)
    for p, q in zip(a.probs, b.probs):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_predict_loader_defaults_are_mc_30_draws_seed_0():
    lw = LayerwiseLaplace.fit(mlp(), loader(), structure="diag", prior_precision=2.0, progress=False)
    test = loader(6, seed=1)
    got = lw.predict_loader(test, [["6"], ["4", "6"]], progress=False)
    _same(got, lw.predict_loader(test, [["6"], ["4", "6"]], "mc", n_samples=30, seed=0, path="auto", progress=False))
    other = lw.predict_loader(test, [["6"], ["4", "6"]], "mc", n_samples=30, seed=1, progress=False)
    assert not torch.equal(other.probs[0], got.probs[0])  # the seed matters on this posterior
    fewer = lw.predict_loader(test, [["6"], ["4", "6"]], "mc", n_samples=31, seed=0, progress=False)
    assert not torch.equal(fewer.probs[0], got.probs[0])


@pytest.mark.parametrize("option", ["n_samples", "sample_batch"])
def test_counts_of_one_are_allowed_and_bools_or_zero_are_refused(option):
    lw = LayerwiseLaplace.fit(mlp(), loader(), structure="diag", prior_precision=2.0, progress=False)
    test = loader(4, seed=1)
    out = lw.predict_loader(test, [["6"]], **{option: 1}, progress=False)
    assert out.probs[0].shape == (4, 3)
    what = "a positive integer" if option == "n_samples" else "a positive integer or None"
    for bad in (True, 0):
        with pytest.raises(ValueError, match=f"^{option} must be {what}, got {bad!r}$"):
            lw.predict_loader(test, [["6"]], **{option: bad}, progress=False)


def test_sets_must_be_lists_of_group_names():
    lw = LayerwiseLaplace.fit(mlp(), loader(), structure="diag", progress=False)
    msg = "sets must be a list of lists of group names, e.g. [['blocks.0'], ['head']]"
    with pytest.raises(TypeError, match=f"^{re.escape(msg)}$"):
        lw.predict_loader(loader(4), ["6"], progress=False)


@pytest.mark.parametrize("progress", [False, True])
def test_glm_chunks_and_progress_bar(monkeypatch, progress):
    """GLM: at most ``chunk_size`` examples per Jacobian pass (default 32: one pass per batch of 6, 32 + 8 for a
    batch of 40), one bar
    ``layer-wise GLM`` with ``progress`` passed on; MC: one bar ``layer-wise MC``."""
    lw = LayerwiseLaplace.fit(mlp(), loader(), structure="diag", prior_precision=2.0, progress=False)
    sizes, real = [], lw.posterior.structure.glm_cov_parts

    def record(model, part, *args):
        sizes.append(part[0].shape[0])
        return real(model, part, *args)

    bars, real_bar = [], layerwise_mod.progress_bar

    def bar(it, desc, enabled):
        bars.append((desc, enabled))
        return real_bar(it, desc=desc, enabled=False)

    monkeypatch.setattr(lw.posterior.structure, "glm_cov_parts", record)
    monkeypatch.setattr(layerwise_mod, "progress_bar", bar)
    lw.predict_loader(loader(12, seed=1), [["6"]], "glm", chunk_size=4, progress=progress)
    assert sizes == [4, 2, 4, 2]
    sizes.clear()
    lw.predict_loader(loader(12, seed=1), [["6"]], "glm", progress=progress)
    assert sizes == [6, 6]
    sizes.clear()
    lw.predict_loader(loader(40, seed=1, batch_size=40), [["6"]], "glm", progress=progress)
    assert sizes == [32, 8]
    lw.predict_loader(loader(4, seed=1), [["6"]], "mc", n_samples=2, progress=progress)
    assert bars == [("layer-wise GLM", progress)] * 3 + [("layer-wise MC", progress)]


def test_bf16_model_glm_probabilities_come_from_float32_logits():
    """A bf16 model's structure is float32; its logits are cast to it before the softmax and the probit link, so
    the MAP probabilities are ``softmax`` of the float32 logits (not a bf16 softmax)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).bfloat16()
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(6, 4, generator=g).bfloat16(), torch.randint(0, 3, (6,), generator=g)
    lw = LayerwiseLaplace.fit(model, [(X, y)], structure="diag", prior_precision=1.0, progress=False)
    out = lw.predict_loader([(X, y)], [["2"]], "glm", progress=False)
    with torch.no_grad():
        want = torch.softmax(model(X).float(), -1)
    assert out.map_probs.dtype == out.probs[0].dtype == torch.float32
    torch.testing.assert_close(out.map_probs, want, rtol=0, atol=1e-7)
