"""What the trace and autocorrelation plots draw (tests/MUTATION.md, ``metrics/diagnostics.py`` plotting).

The suite only checked that a PNG was written, so ignoring ``names``/``max_plots``, plotting the wrong series or the
wrong lags passed. The figure is captured at ``plt.close`` and compared with the input arrays and with the
autocorrelation written out here (``ρ_k = Σ_t (x_t − x̄)(x_{t+k} − x̄) / Σ_t (x_t − x̄)²``); the PNG's pixel size is
``100 dpi × (7, 1.8·panels)`` inches.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

from bayespeft.metrics.diagnostics import plot_autocorr, plot_traces

matplotlib.use("Agg")
import matplotlib.image  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture
def figures(monkeypatch):
    """Figures the plot functions close, in order (still inspectable after ``close``)."""
    seen, close = [], plt.close

    def keep(fig=None):
        seen.append(fig)
        close(fig)

    monkeypatch.setattr(plt, "close", keep)
    return seen


def _arrays():
    rng = np.random.default_rng(7)
    return {"a": rng.standard_normal((3, 60)), "b": rng.standard_normal((3, 60)).cumsum(1),
            "v": rng.standard_normal((3, 60, 2))}  # v splits into v[0], v[1]


def _acf(x):
    x = x - x.mean()
    return np.array([(x[: len(x) - k] * x[k:]).sum() for k in range(len(x))]) / (x * x).sum()


def _panels(fig):
    return [ax.get_ylabel() for ax in fig.axes]


def test_traces_max_plots_names_series_and_size(tmp_path, figures):
    arr = _arrays()
    path = plot_traces(arr, tmp_path / "t.png", max_plots=3)
    fig = figures[-1]
    assert _panels(fig) == ["a", "b", "v[0]"]
    assert matplotlib.image.imread(path).shape[:2] == (3 * 180, 700)
    lines = fig.axes[2].get_lines()
    assert [ln.get_label() for ln in lines] == ["chain 0", "chain 1", "chain 2"]
    for c, ln in enumerate(lines):
        np.testing.assert_array_equal(ln.get_ydata(), arr["v"][c, :, 0])
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["chain 0", "chain 1", "chain 2"]
    assert fig.axes[-1].get_xlabel() == "kept draw" and fig.axes[0].get_xlabel() == ""

    plot_traces(arr, tmp_path / "n.png", names=["v[1]", "a"], max_plots=1)  # names win over max_plots
    assert _panels(figures[-1]) == ["v[1]", "a"]
    plot_traces(arr, tmp_path / "d.png")  # default max_plots = 8 >= 4 quantities
    assert _panels(figures[-1]) == ["a", "b", "v[0]", "v[1]"]


def test_autocorr_lags_values_max_plots_and_names(tmp_path, figures):
    arr = _arrays()
    path = plot_autocorr(arr, tmp_path / "a.png", max_plots=2, max_lag=5)
    fig = figures[-1]
    assert _panels(fig) == ["a", "b"]
    assert matplotlib.image.imread(path).shape[:2] == (2 * 180, 700)
    lines = fig.axes[1].get_lines()
    assert [ln.get_label() for ln in lines[:3]] == ["chain 0", "chain 1", "chain 2"]
    for c in range(3):
        np.testing.assert_allclose(lines[c].get_ydata(), _acf(arr["b"][c])[:6], rtol=1e-10, atol=1e-12)
    assert list(lines[3].get_ydata()) == [0, 0]  # the zero line
    assert fig.axes[-1].get_xlabel() == "lag (kept draws)"

    plot_autocorr(arr, tmp_path / "n.png", names=["v[0]"], max_plots=3)
    fig = figures[-1]
    assert _panels(fig) == ["v[0]"]
    np.testing.assert_allclose(fig.axes[0].get_lines()[1].get_ydata(), _acf(arr["v"][1, :, 0])[:51], rtol=1e-10,
                               atol=1e-12)  # default max_lag = 50 (60 draws)
    plot_autocorr(arr, tmp_path / "d.png")
    assert _panels(figures[-1]) == ["a", "b", "v[0]", "v[1]"]


def _many():
    rng = np.random.default_rng(8)
    return {f"q{i}": rng.standard_normal((2, 60)) for i in range(10)}


@pytest.mark.parametrize("plot", [plot_traces, plot_autocorr])
def test_default_max_plots_is_8(tmp_path, figures, plot):
    plot(_many(), tmp_path / "m.png")
    assert _panels(figures[-1]) == [f"q{i}" for i in range(8)]


@pytest.mark.parametrize("plot", [plot_traces, plot_autocorr])
def test_the_look_is_pinned(tmp_path, figures, plot):
    """Line width 0.8, axis-label size 8, legend size 7 in the upper right, a thin black zero line under the
    autocorrelations (change with the look)."""
    plot(_arrays(), tmp_path / "s.png")
    fig = figures[-1]
    for ax in fig.axes:
        assert {ln.get_linewidth() for ln in ax.get_lines()[:3]} == {0.8}
        assert ax.yaxis.label.get_fontsize() == 8
        if plot is plot_autocorr:
            zero = ax.get_lines()[3]
            assert (zero.get_color(), zero.get_linewidth()) == ("k", 0.5)
    legend = fig.axes[0].get_legend()
    assert legend._loc == 1 and {t.get_fontsize() for t in legend.get_texts()} == {7}  # 1 = "upper right"
    assert [ax.get_legend() for ax in fig.axes[1:]] == [None] * (len(fig.axes) - 1)


def test_unknown_name_lists_the_first_20_available_sorted(tmp_path):
    arrays = {f"q{i:02d}": np.zeros((1, 5)) for i in range(25)}
    with pytest.raises(KeyError, match=r"unknown diagnostic\(s\) \['zz'\]; available: \['q00', .*'q19'\]") as e:
        plot_traces(arrays, tmp_path / "x.png", names=["zz"])
    assert "'q20'" not in str(e.value)
