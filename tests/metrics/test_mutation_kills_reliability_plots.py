"""What the reliability diagrams draw (tests/MUTATION.md, third pass, ``metrics/reliability.py``).

The suite only checked that a PNG was written atomically, so bars at the wrong place or height, a missing gap bar,
the wrong fractions, labels or legend passed. The figure is captured at ``savefig`` and its artists are compared
with :func:`reliability_diagram_data` (tested against torchmetrics and by hand in the other files): bar ``b`` of the
accuracy panel spans ``[b/M, (b+1)/M)`` with height ``acc_b`` (0 for an empty bin), the gap bar goes from ``acc_b``
to ``conf_b``, the lower panel's bar is centred on the bin with height ``n_b / N``. The look (colours, widths,
font sizes, figure size) is pinned as it is; the PNG is ``dpi × figsize`` pixels.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from bayespeft.metrics import plot_reliability_comparison, plot_reliability_diagram, reliability_diagram_data

matplotlib.use("Agg")
import matplotlib.image  # noqa: E402


@pytest.fixture
def saved(monkeypatch):
    """Figures passed to ``savefig``, in order (the functions build a ``Figure`` without pyplot)."""
    seen, savefig = [], Figure.savefig

    def keep(self, *args, **kwargs):
        seen.append(self)
        return savefig(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return seen


def _data(seed=0, n=40):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 3)) * 2.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(3, p=p) for p in probs])
    # one example alone in the bin [0.2, 0.4) of 5 bins (no other top-label confidence is that low here)
    return np.vstack([probs, [[0.36, 0.32, 0.32]]]), np.append(labels, 0)


def _bars(ax):
    return [p for p in ax.patches]


def _xy(p):
    return p.get_x(), p.get_y(), p.get_width(), p.get_height()


def test_single_diagram(tmp_path, saved):
    probs, labels = _data()
    d = reliability_diagram_data(probs, labels, n_bins=5)
    assert d.count[0] == 0 and d.count[1] == 1 and (d.count > 1).sum() >= 2  # empty, one example, filled bins
    path = plot_reliability_diagram(probs, labels, tmp_path / "r.png", title="MAP", n_bins=5, dpi=50)
    assert matplotlib.image.imread(path).shape[:2] == (round(5.2 * 50), round(4.5 * 50))
    fig = saved[-1]
    assert tuple(fig.get_size_inches()) == (4.5, 5.2)
    ax, axc = fig.axes
    assert ax.get_shared_x_axes().joined(ax, axc)
    h_top, h_bottom = ax.get_position().height, axc.get_position().height
    assert h_top / h_bottom == pytest.approx(3.0, rel=0.05)  # height ratios 3 : 1

    filled = d.count > 0
    acc, conf = np.where(filled, d.accuracy, 0.0), np.where(filled, d.confidence, 0.0)
    bars = _bars(ax)
    assert len(bars) == 10
    for b in range(5):
        np.testing.assert_allclose(_xy(bars[b]), (b / 5, 0.0, 0.2, acc[b]), atol=1e-12)
        np.testing.assert_allclose(_xy(bars[5 + b]), (b / 5, acc[b], 0.2, conf[b] - acc[b]), atol=1e-12)
    blue, gap = bars[0], bars[5]
    assert blue.get_facecolor() == to_rgba("tab:blue") and blue.get_edgecolor() == to_rgba("black")
    assert blue.get_linewidth() == 0.5 and blue.get_hatch() is None
    assert gap.get_facecolor() == to_rgba("tab:red", 0.3) and gap.get_edgecolor() == to_rgba("tab:red", 0.3)
    assert gap.get_hatch() == "//" and gap.get_linewidth() == 0.5
    lower = _bars(axc)
    for b in range(5):
        np.testing.assert_allclose(_xy(lower[b]), (b / 5, 0.0, 0.2, d.count[b] / d.count.sum()), atol=1e-12)
    assert lower[0].get_facecolor() == to_rgba("gray") and lower[0].get_edgecolor() == to_rgba("black")
    assert lower[0].get_linewidth() == 0.5

    (text,) = ax.texts
    assert text.get_text() == f"ECE {100 * d.ece:.2f}%\nMCE {100 * d.mce:.2f}%\nN = 41"
    assert text.get_position() == (0.97, 0.05) and text.get_transform() is ax.transAxes
    assert (text.get_ha(), text.get_va(), text.get_fontsize()) == ("right", "bottom", 8)
    _check_finish(ax, axc, "accuracy", "MAP", ["accuracy", "gap to confidence", "perfect calibration"])


def _check_finish(ax, axc, ylabel, title, legend):
    diag = ax.get_lines()[-1]  # drawn last, after the markers of a comparison
    assert list(diag.get_xdata()) == [0, 1] and list(diag.get_ydata()) == [0, 1]
    assert diag.get_linestyle() == "--" and diag.get_color() == "k" and diag.get_linewidth() == 1
    assert ax.get_xlim() == (0, 1) and ax.get_ylim() == (0, 1)
    assert ax.get_ylabel() == ylabel and ax.get_title() == title and ax.title.get_fontsize() == 10
    leg = ax.get_legend()
    assert sorted(t.get_text() for t in leg.get_texts()) == sorted(legend)
    assert leg._loc == 2 and leg.get_texts()[0].get_fontsize() == 8  # "upper left"
    assert axc.get_xlabel() == "confidence (top-label probability)" and axc.get_ylabel() == "fraction"


def test_single_diagram_defaults(tmp_path, saved):
    probs, labels = _data(1, n=80)
    path = plot_reliability_diagram(probs, labels, tmp_path / "r.png")
    assert matplotlib.image.imread(path).shape[:2] == (round(5.2 * 120), round(4.5 * 120))  # dpi 120
    ax, axc = saved[-1].axes
    assert len(ax.patches) == 2 * 15 and len(axc.patches) == 15  # 15 bins
    assert ax.get_title() == "reliability diagram"


def test_comparison(tmp_path, saved):
    curves = {name: reliability_diagram_data(*_data(seed, n=30 + 10 * seed), n_bins=4)
              for seed, name in enumerate(["a", "b", "c", "d", "e", "f"])}
    path = plot_reliability_comparison(curves, tmp_path / "c.png", title="MAP vs Bayes", dpi=40)
    assert matplotlib.image.imread(path).shape[:2] == (round(5.4 * 40), round(5.0 * 40))
    fig = saved[-1]
    assert tuple(fig.get_size_inches()) == (5.0, 5.4)
    ax, axc = fig.axes
    assert ax.get_shared_x_axes().joined(ax, axc)
    assert ax.get_position().height / axc.get_position().height == pytest.approx(3.0, rel=0.05)
    colors = ["tab:gray", "tab:blue", "tab:orange", "tab:green", "tab:red", "tab:gray"]  # cycles after 5
    k, w = 6, 0.25
    bars, lower, markers = _bars(ax), _bars(axc), ax.get_lines()[:6]
    for i, (label, d) in enumerate(curves.items()):
        filled = d.count > 0
        for b in range(4):
            x = b * w + w * i / k
            np.testing.assert_allclose(_xy(bars[4 * i + b]), (x, 0, w / k, d.accuracy[b] if filled[b] else 0.0),
                                       atol=1e-12)
            np.testing.assert_allclose(_xy(lower[4 * i + b]), (x, 0, w / k, d.count[b] / d.count.sum()), atol=1e-12)
        bar = bars[4 * i]
        assert bar.get_facecolor() == to_rgba(colors[i], 0.75) and bar.get_edgecolor() == to_rgba("black", 0.75)
        assert bar.get_linewidth() == 0.4 and lower[4 * i].get_linewidth() == 0.4
        assert lower[4 * i].get_facecolor() == to_rgba(colors[i], 0.75)
        assert lower[4 * i].get_edgecolor() == to_rgba("black", 0.75)
        m = markers[i]
        centres = (np.arange(4) * w + w * i / k + w / (2 * k))[filled]
        np.testing.assert_allclose(m.get_xdata(), centres, atol=1e-12)
        np.testing.assert_allclose(m.get_ydata(), d.confidence[filled], atol=1e-12)
        assert m.get_marker() == "v" and m.get_linestyle() == "None" and m.get_color() == colors[i]
        assert m.get_markeredgecolor() == "black" and m.get_markersize() == 4
    _check_finish(ax, axc, "accuracy (bars); mean confidence (markers)", "MAP vs Bayes",
                  [f"{n} (ECE {100 * d.ece:.2f}%)" for n, d in curves.items()] + ["perfect calibration"])


def test_comparison_defaults_and_errors(tmp_path, saved):
    d = reliability_diagram_data(*_data(), n_bins=4)
    empty = reliability_diagram_data(*_data(), n_bins=4)
    empty.count[:] = 0  # no examples: fractions 0, not 0/0
    single = reliability_diagram_data(np.array([[0.1, 0.9]]), np.array([1]), n_bins=4)
    path = plot_reliability_comparison({"x": d, "none": empty, "one": single}, tmp_path / "c.png")
    assert matplotlib.image.imread(path).shape[:2] == (round(5.4 * 120), round(5.0 * 120))
    ax, axc = saved[-1].axes
    assert ax.get_title() == "reliability diagram"
    assert [p.get_height() for p in axc.patches[4:8]] == [0.0] * 4
    assert [p.get_height() for p in axc.patches[8:]] == [0.0, 0.0, 0.0, 1.0]  # one example: fraction 1
    assert [p.get_height() for p in ax.patches[8:]] == [0.0, 0.0, 0.0, 1.0]  # its bin is filled: accuracy 1
    assert list(ax.get_lines()[2].get_ydata()) == [0.9]  # and has a confidence marker
    with pytest.raises(ValueError, match="^plot_reliability_comparison needs at least one curve$"):
        plot_reliability_comparison({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="^all curves must use the same bins$"):
        plot_reliability_comparison({"a": d, "b": reliability_diagram_data(*_data(), n_bins=5)}, tmp_path / "x.png")
    shifted = reliability_diagram_data(*_data(), n_bins=4)
    shifted.edges = shifted.edges + 0.01
    with pytest.raises(ValueError, match="^all curves must use the same bins$"):
        plot_reliability_comparison({"a": d, "b": shifted}, tmp_path / "x.png")
