"""End to end, as in bayesian-lora's ARC example: a causal LM with LoRA (PEFT) on q/v scores answer letters.

A tiny random Llama stands in for Phi-2; the "letters" are four token ids (stand-ins for " A", " B", " C", " D"),
prompts are right-padded and the letter logits are read at the last non-padding position. The pipeline
(factors -> Cholesky -> evidence -> Jacobians -> variance -> predictive) is checked against dense Laplace
formulas built from the same factors and Jacobians from an independent ``torch.func.jacrev`` call.
"""

from __future__ import annotations

import warnings

import os

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch.func import functional_call, jacrev
from torch.utils.data import DataLoader

from bayespeft.laplace.bayesian_lora import (
    calculate_kronecker_factors,
    cholesky_decompose_small_factors,
    jacobian_mean,
    linearized_predictive,
    model_evidence,
    variance,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

LETTERS = torch.tensor([10, 11, 12, 13])
N, T, PAD = 10, 9, 0


def tiny_lora_llama() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=32, pad_token_id=PAD,
    )
    base = transformers.LlamaForCausalLM(cfg)
    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.3, init_lora_weights=False)
    return get_peft_model(base, lora)


def dataset() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    items = []
    for _ in range(N):
        length = int(torch.randint(5, T + 1, (1,), generator=g))
        ids = torch.full((T,), PAD)
        ids[:length] = torch.randint(14, 64, (length,), generator=g)
        mask = (torch.arange(T) < length).long()
        items.append({"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 4, (), generator=g)})
    return items


def letter_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """bayesian-lora's ``forward_call``: next-token logits at the last non-pad position, restricted to the letters."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    last = batch["attention_mask"].sum(1) - 1
    return logits[torch.arange(logits.shape[0]), last][:, LETTERS]


def test_arc_style_multiple_choice_end_to_end() -> None:
    model = tiny_lora_llama()
    loader = DataLoader(dataset(), batch_size=4)
    kw = dict(n_kfac=4, lr_threshold=16, target_module_keywords=["lora"])
    factors = calculate_kronecker_factors(model, letter_logits, loader, generator=torch.Generator().manual_seed(0), **kw)
    again = calculate_kronecker_factors(model, letter_logits, loader, generator=torch.Generator().manual_seed(0), **kw)
    assert len(factors) == 8  # 2 layers x (q, v) x (lora_A, lora_B)
    for name, (a, s) in factors.items():
        torch.testing.assert_close(a, again[name][0], rtol=0, atol=0)  # LoRA dropout off: deterministic
        if name.endswith("lora_A.default"):
            assert a.shape == (32, 4) and s.shape == (2, 2)  # hidden 32 >= 16: low-rank activations
        else:
            assert a.shape == (2, 2) and s.shape == (32, 4)  # low-rank output gradients

    with torch.no_grad():
        ll = sum(torch.log_softmax(letter_logits(model.eval(), b), -1).gather(1, b["labels"][:, None]).sum() for b in loader)
    roots = cholesky_decompose_small_factors(factors, 16, "cpu", torch.float64)
    s2 = torch.tensor(0.05)
    evidence = model_evidence(model, ll, roots, n_lora=2, n_kfac=4, s2=s2)

    # dense Laplace quantities from the same factors (row-major vec(W): S ⊗ A)
    names = list(roots)
    params = dict(model.named_parameters())
    theta = torch.cat([params[f"{n}.weight"].detach().reshape(-1).double() for n in names])
    blocks = [torch.kron(rs @ rs.T, ra @ ra.T) for ra, rs in (roots[n] for n in names)]
    prec = torch.block_diag(*blocks) + torch.eye(theta.numel(), dtype=torch.float64) / 0.05
    dense_evidence = ll - 0.5 * theta @ theta / 0.05 - 0.5 * torch.logdet(prec * 0.05)
    torch.testing.assert_close(evidence, dense_evidence.double(), rtol=1e-5, atol=1e-4)

    batch = next(iter(loader))
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    model.train()  # jacobian_mean must switch dropout off itself
    impl = model.config._attn_implementation
    assert impl != "eager"  # fused attention: no vmap rule, so jacobian_mean switches to eager attention inside
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*performance drop.*")
        jac, f_mu = jacobian_mean(model, inputs, target_ids=LETTERS)
    assert model.training and model.config._attn_implementation == impl
    with torch.no_grad():
        torch.testing.assert_close(f_mu, letter_logits(model.eval(), batch), rtol=1e-5, atol=1e-6)
    f_var = variance(inputs, jac, roots, s2, n_logits=4, n_lora=2, n_kfac=4, device="cpu")
    assert f_var.shape == (4, 4, 4)

    weights = {f"{n}.weight": params[f"{n}.weight"].detach() for n in names}

    def f(w: dict[str, torch.Tensor]) -> torch.Tensor:
        out = functional_call(model, w, args=(), kwargs=inputs).logits
        return out[torch.arange(4), inputs["attention_mask"].sum(1) - 1][:, LETTERS]

    with warnings.catch_warnings():  # the reference keeps the model's fused attention (slow under vmap, warns)
        warnings.filterwarnings("ignore", message=".*performance drop.*")
        J = jacrev(f)(weights)
    J = torch.cat([J[f"{n}.weight"].reshape(4, 4, -1).double() for n in names], dim=-1)
    expected = torch.einsum("bcd,de,bfe->bcf", J, torch.linalg.inv(prec), J)
    torch.testing.assert_close(f_var, expected.float(), rtol=1e-3, atol=1e-6)

    probs = linearized_predictive(f_mu, f_var, n_samples=4000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(probs.sum(-1), torch.ones(4))
    map_probs = torch.softmax(f_mu, -1)
    entropy = lambda p: -(p * p.log()).sum(-1)  # noqa: E731
    assert bool((entropy(probs) > entropy(map_probs) - 1e-3).all())
