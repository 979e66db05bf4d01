"""Early stopping's improvement rule at the ``min_delta`` boundary (tests/MUTATION.md, ``train/loop.py`` ``_improved``).

The documented contract (``TrainConfig.min_delta``): an epoch improves only if ``monitor`` improves by *more than*
``min_delta``: strictly below ``best − min_delta`` for ``val_loss``, strictly above ``best + min_delta`` for
``val_acc``. All values are dyadic, so the boundary is exact in floating point.
"""

from __future__ import annotations

import pytest

from bayespeft.train.config import TrainConfig
from bayespeft.train.loop import _improved


@pytest.mark.parametrize(("metric", "expected"), [(0.75, False), (0.75 - 2**-20, True), (0.875, False), (1.5, False)])
def test_val_loss_must_drop_by_more_than_min_delta(metric, expected):
    cfg = TrainConfig(monitor="val_loss", min_delta=0.25)
    assert _improved(metric, 1.0, cfg) is expected


@pytest.mark.parametrize(("metric", "expected"), [(0.75, False), (0.75 + 2**-20, True), (0.625, False), (0.25, False)])
def test_val_acc_must_rise_by_more_than_min_delta(metric, expected):
    cfg = TrainConfig(monitor="val_acc", min_delta=0.25)
    assert _improved(metric, 0.5, cfg) is expected


def test_without_min_delta_a_tie_is_no_improvement_and_the_first_epoch_always_is():
    for monitor in ("val_loss", "val_acc"):
        cfg = TrainConfig(monitor=monitor)
        assert _improved(0.5, 0.5, cfg) is False
        assert _improved(0.5, None, cfg) is True
        assert _improved(None, 0.5, cfg) is True
