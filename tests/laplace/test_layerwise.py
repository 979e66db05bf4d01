"""Layer-wise Laplace: per-group posteriors from one pass equal separate fits; MC (cached prefix) and GLM predictives."""

from __future__ import annotations

import copy
import functools
import warnings

import pytest
import torch

import bayespeft.laplace as bl
from bayespeft.adapters import AdapterConfig, apply_adapter
from bayespeft.laplace.layerwise import LayerwiseLaplace, sample_logits
from bayespeft.laplace.prefix import PrefixCache
from bayespeft.laplace.sample_batch import choose_mode, draws_per_forward, per_draw_parameters
from bayespeft.metrics import calibration_error
from bayespeft.models import build_model
from bayespeft.models.tiny import tiny_model_config


@functools.lru_cache(maxsize=None)
def lora_model(name: str = "micro_vit", method: str = "lora"):
    """A tiny backbone with an adapter whose LoRA B factors are non-zero (as after training)."""
    torch.manual_seed(0)
    model = build_model(tiny_model_config(name), 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        apply_adapter(model, AdapterConfig.dropping_unread({"method": method, "r": 2}))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0.0, 0.3)
    return model.eval()


def data(model, n: int = 24, seed: int = 1, batch_size: int = 8):
    spec = model.input_spec
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, spec.in_chans, spec.image_size, spec.image_size, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=batch_size)


@functools.lru_cache(maxsize=None)
def layerwise(structure: str, name: str = "micro_vit") -> LayerwiseLaplace:
    model = lora_model(name)
    lw = LayerwiseLaplace.fit(model, data(model), "block", structure=structure, progress=False)
    lw.tune_priors("marglik", n_steps=25)
    return lw


@pytest.mark.parametrize("structure", ["diag", "kfac", "lowrank_kfac", "full"])
def test_each_group_posterior_equals_a_separate_fit_of_that_group(structure):
    lw = layerwise(structure)
    model = lw.posterior.model
    loader = data(model)
    xb, yb = next(iter(data(model, n=6, seed=5)))
    for g in lw.groups:
        alone = bl.fit(model, loader, structure=structure, subset=list(g.param_names), progress=False)
        tuned = alone.optimize_prior("marglik", n_steps=25, progress=False)
        ours = lw.posterior_of(g.name)
        assert ours.param_names == list(g.param_names)
        torch.testing.assert_close(torch.tensor(lw.prior_precision[g.name]), tuned[0].cpu(), rtol=1e-5, atol=0)
        torch.testing.assert_close(ours.precision(), alone.precision(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ours.log_marginal_likelihood(), alone.log_marginal_likelihood(), rtol=1e-6, atol=1e-5)
        torch.testing.assert_close(
            ours.predict((xb, yb), method="glm"), alone.predict((xb, yb), method="glm"), rtol=1e-5, atol=1e-6
        )


def test_restriction_rejects_parameters_outside_the_posterior_and_partial_kfac_blocks():
    lw = layerwise("kfac")
    with pytest.raises(ValueError, match="not in this posterior"):
        lw.posterior.restrict(["no.such.parameter"])
    head_w = [n for n in lw.param_names("head") if n.endswith("weight")]
    with pytest.raises(ValueError, match="only partly in the restriction"):
        lw.posterior.restrict(head_w)  # weight without its bias: the KFAC block G ⊗ A spans both
    with pytest.raises(ValueError, match="available groups"):
        lw.posterior_of("blocks.9")


@pytest.mark.parametrize("structure", ["diag", "kfac", "full"])
def test_glm_parts_of_one_pass_equal_each_posteriors_own_glm_predictive(structure):
    lw = layerwise(structure)
    loader = data(lw.posterior.model, n=10, seed=3, batch_size=5)
    sets = [[n] for n in lw.names] + [lw.names]
    for link in ("probit", "mc"):
        res = lw.predict_loader(loader, sets, "glm", link=link, n_samples=50, seed=4)
        assert res.paths == [f"glm ({link})"] * len(sets)
        for s, probs in zip(sets, res.probs):
            post = lw.posterior_of(s)
            gen = torch.Generator().manual_seed(4)
            ref = torch.cat([post.predict(b, method="glm", link=link, n_samples=50, generator=gen) for b in loader])
            torch.testing.assert_close(probs, ref, rtol=1e-5, atol=1e-6)
        X, y = loader.dataset.tensors
        torch.testing.assert_close(res.map_probs, torch.softmax(lw.posterior.model(X), -1).detach(), rtol=1e-5, atol=1e-6)
        assert torch.equal(res.labels, y)


def group_draws(name: str, group: str, structure: str, n_draws: int, seed: int, n: int):
    """One group's posterior of a LoRA ``name`` model, ``n_draws`` seeded draws, a test batch of ``n`` rows and its
    prefix cache: ``(model, post, thetas, (xb, yb), cache, key, path, recorded MAP activations)``."""
    model = lora_model(name)
    lw = LayerwiseLaplace.fit(model, data(model, n=8), "block", structure=structure, progress=False)
    if group not in lw.names:  # transformers < 5 names the stack encoder.layer
        group = group.replace("vit.layers", "vit.encoder.layer")
    post = lw.posterior_of(group)
    thetas = post.sample(n_draws, generator=torch.Generator().manual_seed(seed))
    xb, yb = next(iter(data(model, n=n, seed=9)))
    cache = PrefixCache(model, post.forward_fn)
    k, path = cache.entry(post.param_names, (xb, yb))
    _, recorded = cache.map_forward((xb, yb), [k])
    return model, post, thetas, (xb, yb), cache, k, path, recorded


@pytest.mark.parametrize(
    ("name", "group", "cached"),
    [("micro_vit", "blocks.1", True), ("micro_vit", "head", True), ("micro_vit", "blocks.0", False),
     ("hf_vit", "vit.layers.1", True), ("hf_vit", "classifier", True)],
)
def test_cached_prefix_gives_the_naive_per_sample_logits(name, group, cached):
    model, post, thetas, (xb, yb), cache, k, path, recorded = group_draws(name, group, "diag", n_draws=4, seed=0, n=5)
    assert path.startswith("cached-prefix") == cached, path
    fast = sample_logits(post, (xb, yb), thetas, cache, k, recorded.get(k))
    naive = sample_logits(post, (xb, yb), thetas)
    assert not torch.allclose(naive[0], naive[1])  # the samples do move the logits
    torch.testing.assert_close(fast, naive, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the model is back at its MAP
        torch.testing.assert_close(model(xb), cache.map_forward((xb, yb))[0])


def logits_by_hand(model, post, thetas, X):
    """``(S, B, C)``: each draw written into the model's parameters, one full forward each, parameters restored."""
    named = dict(model.named_parameters())
    out = []
    with torch.no_grad():
        backup = {n: named[n].clone() for n in post.param_names}
        for t in thetas:
            for n, v in post.structure.unflatten(t).items():
                named[n].copy_(v)
            out.append(model(X))
        for n, v in backup.items():
            named[n].copy_(v)
    return torch.stack(out)


@pytest.mark.parametrize(
    ("name", "group", "mode"),
    [("micro_vit", "blocks.1", "expand"), ("micro_vit", "head", "expand"), ("micro_vit", "blocks.0", "repeat"),
     ("micro_vit", "head", "repeat"), ("hf_vit", "vit.layers.1", "expand"), ("hf_vit", "vit.layers.0", "repeat")],
)
def test_batched_draws_give_the_logits_of_one_draw_at_a_time(name, group, mode):
    """Several draws stacked in the batch dimension (each owning module applies draw s to row block s) give, per
    draw, the logits of writing that draw into the model and running a full forward; the model stays at its MAP."""
    model, post, thetas, (xb, yb), cache, k, _, recorded = group_draws(name, group, "kfac", n_draws=5, seed=3, n=4)
    ref = logits_by_hand(model, post, thetas, xb)
    assert not torch.allclose(ref[0], ref[1])
    fast = sample_logits(post, (xb, yb), thetas, cache, k, recorded.get(k), mode=mode, per_forward=3)  # 3 + 2 draws
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)
    assert choose_mode(post, (xb[:2], yb[:2]), thetas[:2], cache, k, cache.map_forward((xb[:2], yb[:2]), [k])[1].get(k))[0] == (
        "expand" if k is not None else "repeat")
    with torch.no_grad():
        torch.testing.assert_close(model(xb), cache.map_forward((xb, yb))[0])


def test_draws_per_forward_fit_the_memory_budget_and_non_leaf_owners_are_refused():
    assert draws_per_forward(30, 10.0, budget=200) == 15  # room for 20: two forwards of 15
    assert draws_per_forward(30, 10.0, budget=1000) == 30
    assert draws_per_forward(30, 10.0, budget=5) == 1 and draws_per_forward(30, None) == 1
    model = lora_model()
    block = next(n for n, m in model.named_modules() if n.endswith("blocks.1"))
    with pytest.raises(ValueError, match="not a leaf module"):
        with per_draw_parameters(model, {f"{block}.weight": torch.zeros(2, 3)}):
            pass


def test_mc_predictive_is_the_average_softmax_of_the_seeded_draws():
    lw = layerwise("kfac")
    model = lw.posterior.model
    loader = data(model, n=10, seed=3, batch_size=5)
    sets = [["blocks.1"], ["head"], ["blocks.0", "head"]]
    fast = lw.predict_loader(loader, sets, "mc", n_samples=6, seed=11, sample_batch=4)  # 4 + 2 draws
    one = lw.predict_loader(loader, sets, "mc", n_samples=6, seed=11)  # on CPU: one draw per forward by default
    naive = lw.predict_loader(loader, sets, "mc", n_samples=6, seed=11, path="naive")
    assert [p.split(" ")[0] for p in fast.paths] == ["cached-prefix", "cached-prefix", "naive"]
    assert [p.split("; ")[1] for p in fast.paths] == ["4 draws per forward (expand)"] * 2 + ["4 draws per forward (repeat)"]
    assert all(p.endswith("; one draw per forward") for p in one.paths)
    X, _ = loader.dataset.tensors
    for s, a, b in zip(sets, fast.probs, naive.probs):
        post = lw.posterior_of(s)  # by hand: same seed -> same draws, written into the model one by one
        thetas = post.sample(6, generator=torch.Generator().manual_seed(11))
        named = dict(model.named_parameters())
        ref = 0
        with torch.no_grad():
            for t in thetas:
                backup = {n: named[n].clone() for n in post.param_names}
                for n, v in post.structure.unflatten(t).items():
                    named[n].copy_(v)
                ref = ref + torch.softmax(model(X), -1) / 6
                for n, v in backup.items():
                    named[n].copy_(v)
        torch.testing.assert_close(a, ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(b, ref, rtol=1e-5, atol=1e-6)
    for c, ref in zip(one.probs, naive.probs):
        torch.testing.assert_close(c, ref, rtol=1e-5, atol=1e-6)


def test_mc_approaches_glm_for_the_linear_head_as_samples_grow():
    """For the head alone the logits are linear in the sampled weights, so weight-space MC and the GLM with an MC
    link sample the same Gaussian over logits and differ only by Monte-Carlo error. Stated tolerance: with
    S = 1000 draws of probabilities whose per-draw spread is <= 0.5, one standard error is <= 0.016; we allow 0.05
    on every probability and 0.03 on ΔECE (30 examples, 15 bins), and require the S = 1000 gap to be smaller than
    the S = 20 gap. (For hidden blocks the two predictives genuinely differ: the network is nonlinear in them.)"""
    model = copy.deepcopy(lora_model())
    with torch.no_grad():  # a confident MAP, so that the Bayesian predictive visibly changes calibration
        for n, p in model.named_parameters():
            if p.requires_grad and ".head." in n:
                p.mul_(10)
    lw = LayerwiseLaplace.fit(model, data(model, n=8), "block", structure="kfac", progress=False)
    lw.tune_priors(1.0)
    loader = data(model, n=30, seed=2, batch_size=30)
    gaps, deltas = [], []
    for S in (20, 1000):
        mc = lw.predict_loader(loader, [["head"]], "mc", n_samples=S, seed=0)
        glm = lw.predict_loader(loader, [["head"]], "glm", link="mc", n_samples=S, seed=1)
        gaps.append(float((mc.probs[0] - glm.probs[0]).abs().max()))
        y = mc.labels
        deltas.append((calibration_error(mc.map_probs, y) - calibration_error(mc.probs[0], y),
                       calibration_error(glm.map_probs, y) - calibration_error(glm.probs[0], y)))
    assert float((mc.probs[0] - mc.map_probs).abs().max()) > 0.1  # Bayes is far from MAP here
    assert gaps[1] < 0.05 and gaps[1] < gaps[0]
    d_mc, d_glm = deltas[1]
    assert d_mc > 0.05 and abs(d_mc - d_glm) < 0.03


def test_bad_predictive_arguments_are_rejected():
    lw = layerwise("diag")
    loader = data(lw.posterior.model, n=4)
    with pytest.raises(ValueError, match="n_samples must be a positive integer"):
        lw.predict_loader(loader, [["head"]], "mc", n_samples=0)
    with pytest.raises(ValueError, match="sample_batch must be a positive integer"):
        lw.predict_loader(loader, [["head"]], "mc", sample_batch=0)
    with pytest.raises(ValueError, match="predictive must be 'mc' or 'glm'"):
        lw.predict_loader(loader, [["head"]], "laplace")
    with pytest.raises(TypeError, match="list of lists"):
        lw.predict_loader(loader, ["head"], "mc")
    with pytest.raises(ValueError, match="available groups"):
        lw.predict_loader(loader, [["nope"]], "glm")
    with pytest.raises(ValueError, match="prior precision must be > 0"):
        lw.tune_priors(-1.0)
