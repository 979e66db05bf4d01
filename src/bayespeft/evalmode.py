"""Run a block with a model in eval (or train) mode and put its previous mode back, even when the block raises.

>>> with eval_mode(model):          # dropout off, BatchNorm uses running statistics     # doctest: +SKIP
...     logits = model(x)
>>> with model_mode(model, training=cfg.train_mode):                                     # doctest: +SKIP
...     collect_curvature(model)

The previous mode is ``model.training`` (the root module's flag) and is restored with ``model.train(previous)``,
which goes through any ``train`` override of the model (e.g. the frozen-BatchNorm handling of adapted models).

``unfused_attention(model)``: modules with a ``fused_attn`` switch (timm attention) use their explicit softmax
attention for the block (same maths), and Hugging Face models (``set_attn_implementation``) their ``"eager"``
attention. ``torch.func.vmap`` has no batching rule for the kernels of the fused ``scaled_dot_product_attention``
(forward and backward): it falls back to a slow per-example loop and warns of a "performance drop". Every ``vmap``
over a whole model (including ``jacrev``'s vmap over output rows) runs inside it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["eval_mode", "model_mode", "unfused_attention"]


@contextmanager
def model_mode(model: nn.Module, training: bool) -> Iterator[nn.Module]:
    """Set ``model.train(training)`` for the block; restore the previous mode on exit (also on an exception)."""
    previous = model.training
    model.train(training)
    try:
        yield model
    finally:
        model.train(previous)


def eval_mode(model: nn.Module):
    """``model_mode(model, training=False)``: the block runs in eval mode; the previous mode is restored after."""
    return model_mode(model, training=False)


@contextmanager
def unfused_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Modules with a ``fused_attn`` flag (timm attention) use their explicit softmax attention inside the block,
    Hugging Face models their eager attention; the flags and implementations are restored on exit (also on an
    exception)."""
    flagged = [(m, m.fused_attn) for m in model.modules() if isinstance(getattr(m, "fused_attn", None), bool)]
    hf = [(m, m.config._attn_implementation) for m in model.modules() if _hf_fused(m)]
    for m, _ in flagged:
        m.fused_attn = False
    for m, _ in hf:
        m.set_attn_implementation("eager")
    try:
        yield model
    finally:
        for m, v in flagged:
            m.fused_attn = v
        for m, impl in reversed(hf):
            m.set_attn_implementation(impl)


def _hf_fused(module: nn.Module) -> bool:
    """A Hugging Face model (``set_attn_implementation``) whose attention is not the eager one (sdpa, flash...)."""
    impl = getattr(getattr(module, "config", None), "_attn_implementation", None)
    return callable(getattr(module, "set_attn_implementation", None)) and isinstance(impl, str) and impl != "eager"
