"""Run a block with a model in eval (or train) mode and put its previous mode back, even when the block raises.

>>> with eval_mode(model):          # dropout off, BatchNorm uses running statistics     # doctest: +SKIP
...     logits = model(x)
>>> with model_mode(model, training=cfg.train_mode):                                     # doctest: +SKIP
...     collect_curvature(model)

The previous mode is ``model.training`` (the root module's flag) and is restored with ``model.train(previous)``,
which goes through any ``train`` override of the model (e.g. the frozen-BatchNorm handling of adapted models).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["eval_mode", "model_mode"]


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
