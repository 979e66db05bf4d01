"""R-hat/ESS on vector-valued draws, odd single chains, the default method and the error text (tests/MUTATION.md).

``test_convergence_reference.py`` checks ``rhat``/``ess`` on 2-D ``(chains, draws)`` arrays, where arviz's default
axes (``chain_axis=-2, draw_axis=-1``) coincide with the ones passed, and its single chain has an even length. The
references are that file's estimators written out from the papers (loaded from the file, not re-derived here).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from bayespeft.metrics.diagnostics import ess, rhat


def _reference():
    path = Path(__file__).with_name("test_convergence_reference.py")
    spec = importlib.util.spec_from_file_location("_convergence_reference", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


REF = _reference()


def test_trailing_dimensions_are_separate_quantities():
    """(chains, draws, 2): element i gets the reference of x[:, :, i] (not a draw/element axis mix-up)."""
    x = np.stack([REF.ar1(4, 300, 0.7, seed=11), np.exp(REF.ar1(4, 300, -0.3, seed=12))], axis=-1)
    r, eb, et = rhat(x), ess(x, "bulk"), ess(x, "tail")
    assert r.shape == eb.shape == et.shape == (2,)
    for i in range(2):
        assert r[i] == pytest.approx(REF.rhat_reference(x[:, :, i]), rel=1e-10)
        assert eb[i] == pytest.approx(REF.bulk_ess_reference(x[:, :, i]), rel=1e-10)
        assert et[i] == pytest.approx(REF.tail_ess_reference(x[:, :, i]), rel=1e-10)


def test_single_chain_of_odd_length_drops_the_last_draw():
    x = REF.ar1(1, 601, 0.4, seed=13)
    assert float(rhat(x)) == pytest.approx(REF.rhat_reference(np.stack([x[0, :300], x[0, 300:600]])), rel=1e-10)


def test_default_ess_is_bulk():
    x = REF.ar1(3, 250, 0.5, seed=14)
    assert float(ess(x)) == pytest.approx(REF.bulk_ess_reference(x), rel=1e-10)


def test_unknown_method_is_named():
    with pytest.raises(ValueError, match=r"method must be 'bulk' or 'tail', got 'mean'"):
        ess(np.zeros((2, 10)), "mean")
