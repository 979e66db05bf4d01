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

from bayespeft.metrics.diagnostics import ess, rhat, summarize, verdict


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


def test_summarize_keys_and_values_against_the_references():
    x = REF.ar1(3, 200, 0.6, seed=15)
    v = np.stack([x, x**3], axis=-1)
    s = summarize({"a": x, "v": v, "one": np.array([[2.5]])})
    assert list(s) == ["a", "v[0]", "v[1]", "one"]
    for k, y in [("a", x), ("v[0]", x), ("v[1]", x**3)]:
        assert list(s[k]) == ["rhat", "ess_bulk", "ess_tail", "mean", "sd"]
        assert s[k]["rhat"] == pytest.approx(REF.rhat_reference(y), rel=1e-10)
        assert s[k]["ess_bulk"] == pytest.approx(REF.bulk_ess_reference(y), rel=1e-10)
        assert s[k]["ess_tail"] == pytest.approx(REF.tail_ess_reference(y), rel=1e-10)
        assert s[k]["mean"] == pytest.approx(y.sum() / y.size, rel=1e-12)
        assert s[k]["sd"] == pytest.approx(np.sqrt(((y - y.mean()) ** 2).sum() / (y.size - 1)), rel=1e-12)
    assert s["one"]["mean"] == 2.5 and np.isnan(s["one"]["sd"])  # one draw: no spread


def test_summarize_sd_of_two_draws():
    assert summarize({"two": np.array([[1.0, 3.0]])})["two"]["sd"] == pytest.approx(np.sqrt(2.0), rel=1e-12)


# ---- verdict ------------------------------------------------------------------------------------------------------
def _ess_per_chain(y):
    return min(REF.bulk_ess_reference(y), REF.tail_ess_reference(y)) / y.shape[0]


def test_verdict_worst_quantities_values_and_defaults():
    good = REF.ar1(4, 400, 0.2, seed=16)
    sticky = REF.ar1(4, 400, 0.95, seed=17)  # R-hat 1.134, ESS/chain 8.9
    offset = REF.ar1(4, 400, 0.2, seed=18, offsets=[0.0, 0.0, 0.0, 1.0])  # R-hat 1.110, ESS/chain 6.4
    v = verdict({"const": np.full((4, 400), 2.0), "good": good, "pair": np.stack([sticky, offset], -1)})
    assert (v.n_chains, v.n_draws) == (4, 400)
    assert v.constant == ["const"]  # skipped, and the quantities after it are still evaluated
    assert v.rhat_worst == "pair[0]" and v.rhat_max == pytest.approx(REF.rhat_reference(sticky), rel=1e-10)
    assert v.ess_worst == "pair[1]" and v.ess_per_chain_min == pytest.approx(_ess_per_chain(offset), rel=1e-10)
    assert (v.rhat_strict, v.rhat_lenient, v.min_ess_per_chain) == (1.01, 1.05, 100.0)
    assert not v.single_chain_split
    assert v.as_dict() == {
        "n_chains": 4, "n_draws": 400, "rhat_max": v.rhat_max, "rhat_worst": "pair[0]",
        "ess_per_chain_min": v.ess_per_chain_min, "ess_worst": "pair[1]", "rhat_strict": 1.01, "rhat_lenient": 1.05,
        "min_ess_per_chain": 100.0, "strict": v.strict, "lenient": v.lenient, "single_chain_split": False,
        "constant": ["const"]}


def test_verdict_ties_keep_the_first_quantity():
    x = REF.ar1(3, 300, 0.5, seed=19)
    v = verdict({"a": x, "b": 2.0 * x})  # scaling by 2 is exact: identical ranks, identical R-hat and ESS
    assert (v.rhat_worst, v.ess_worst) == ("a", "a")


def _measured(x):
    """The verdict's own R-hat and ESS/chain (equal to the references to 1e-10), to put thresholds exactly on them."""
    v = verdict({"a": x})
    assert v.rhat_max == pytest.approx(REF.rhat_reference(x), rel=1e-10)
    assert v.ess_per_chain_min == pytest.approx(_ess_per_chain(x), rel=1e-10)
    return v.rhat_max, v.ess_per_chain_min


def test_verdict_thresholds_are_inclusive():
    x = REF.ar1(4, 500, 0.3, seed=20)
    r, e = _measured(x)
    at = verdict({"a": x}, rhat_strict=r, rhat_lenient=r, min_ess_per_chain=e)
    assert at.strict and at.lenient
    assert (at.rhat_strict, at.rhat_lenient, at.min_ess_per_chain) == (r, r, e)
    lenient_only = verdict({"a": x}, rhat_strict=r * (1 - 1e-9), rhat_lenient=r, min_ess_per_chain=e)
    assert not lenient_only.strict and lenient_only.lenient
    assert not verdict({"a": x}, rhat_strict=r, rhat_lenient=r, min_ess_per_chain=e * (1 + 1e-9)).lenient


def test_verdict_nan_diagnostics_and_all_constant_cannot_pass():
    few = verdict({"a": np.random.default_rng(0).standard_normal((2, 3))})  # R-hat and ESS are NaN
    assert few.rhat_max == np.inf and few.ess_per_chain_min == 0.0 and few.rhat_worst == "a" == few.ess_worst
    const = verdict({"a": np.ones((2, 50)), "b": np.array([[3.0]])})
    assert const.constant == ["a", "b"] and const.rhat_max == np.inf and const.ess_per_chain_min == 0.0
    assert (const.rhat_worst, const.ess_worst) == ("", "") and not const.lenient
    assert str(const).startswith("FAIL: max R-hat inf (; strict <= 1.01")
    with pytest.raises(ValueError, match="^no diagnostic arrays to evaluate$"):
        verdict({})


def test_verdict_text():
    x = REF.ar1(4, 500, 0.3, seed=20)
    r, e = _measured(x)
    strict = verdict({"a": x}, rhat_strict=r, rhat_lenient=r, min_ess_per_chain=e)
    assert str(strict) == (f"PASS (strict): max R-hat {r:.4f} (a; strict <= {r}, lenient <= {r}), min ESS/chain "
                           f"{strict.ess_per_chain_min:.1f} (a; need >= {e:g}), 4 chain(s) x 500 draws")
    lenient = verdict({"a": x}, rhat_strict=1.0, rhat_lenient=r, min_ess_per_chain=e)
    assert str(lenient).startswith("PASS (lenient only): ")
    single = verdict({"a": x[:1]}, min_ess_per_chain=0.0)
    assert single.single_chain_split and str(single).endswith("1 chain(s) x 500 draws [single chain: split R-hat]")


def test_verdict_ess_is_the_smaller_of_bulk_and_tail():
    """Draws that stick for 20 steps only beyond ±1.64: the tail ESS (~26) is far below the bulk ESS (~73)."""
    rng = np.random.default_rng(0)

    def sticky_tails(n):
        out = []
        while len(out) < n:
            z = rng.standard_normal()
            out += [z] * (20 if abs(z) > 1.64 else 1)
        return np.array(out[:n])

    x = np.stack([sticky_tails(400) for _ in range(4)])
    bulk, tail = REF.bulk_ess_reference(x), REF.tail_ess_reference(x)
    assert tail < 0.5 * bulk
    assert verdict({"x": x}).ess_per_chain_min == pytest.approx(tail / 4, rel=1e-10)


def test_1d_input_is_refused_with_its_shape():
    with pytest.raises(ValueError, match=r"^expected an array \(chains, draws\[, \.\.\.\]\), got shape \(5,\)$"):
        rhat(np.zeros(5))
