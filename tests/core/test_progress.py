"""Off a terminal (nohup, CI, a cluster job) long loops print plain lines with the elapsed time and an ETA instead of
nothing: one per training epoch, and one every few seconds inside long stages (Laplace fit, prior tuning, sampling).
``BAYESPEFT_PROGRESS`` / ``train.progress`` switch them off or force a mode."""

from __future__ import annotations

import io
import re

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from bayespeft import progress as progress_mod
from bayespeft.progress import progress, progress_mode

LINE = re.compile(r"^(?P<desc>.+) (?P<done>\d+)/(?P<total>\d+)(?P<post>.*) \| elapsed (?P<elapsed>[\d.:]+s?) \| ETA (?P<eta>[\d.:]+s?)$")


class Clock:
    """A fake ``time.perf_counter``: the test moves ``t`` forward by hand."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def seconds(s: str) -> float:
    if s.endswith("s"):
        return float(s[:-1])
    parts = [float(p) for p in s.split(":")]
    return sum(p * 60 ** i for i, p in enumerate(reversed(parts)))


@pytest.fixture()
def no_env(monkeypatch):
    monkeypatch.delenv("BAYESPEFT_PROGRESS", raising=False)


def test_modes(no_env, monkeypatch):
    assert progress_mode(None, io.StringIO()) == "lines" and progress_mode(None, TTY()) == "bar"
    assert progress_mode(True, io.StringIO()) == "lines" and progress_mode(False, TTY()) == "off"
    for env, want in (("0", "off"), ("false", "off"), ("1", "lines"), ("lines", "lines"), ("bar", "bar")):
        monkeypatch.setenv("BAYESPEFT_PROGRESS", env)
        assert progress_mode(None, io.StringIO()) == want, env
    monkeypatch.setenv("BAYESPEFT_PROGRESS", "0")
    assert progress_mode(True, io.StringIO()) == "lines"  # an explicit setting wins over the environment


def test_a_line_per_item_with_elapsed_and_eta(no_env, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress_mod.time, "perf_counter", clock)
    out = io.StringIO()
    bar = progress(range(2, 6), desc="epochs", total=5, initial=1, every_s=0, file=out)
    for k in bar:
        clock.t += 3.0 if k < 4 else 1.0  # items take 3, 3, 1, 1 s
        bar.set_postfix(loss=1.0 / k)
    lines = out.getvalue().splitlines()
    assert len(lines) == 4
    for i, ln in enumerate(lines):
        m = LINE.match(ln)
        assert m, ln
        done, elapsed = i + 1, [3, 6, 7, 8][i]
        assert (m["desc"], int(m["done"]), int(m["total"])) == ("epochs", 1 + done, 5)
        assert seconds(m["elapsed"]) == pytest.approx(elapsed, abs=0.05)
        # ETA: the mean time per item so far times the items left (of this run: `initial` were done before)
        assert seconds(m["eta"]) == pytest.approx(elapsed / done * (4 - done), abs=0.05)
        assert f"loss={1.0 / (2 + i):.4g}" in m["post"]


def test_lines_are_throttled_inside_long_stages(no_env, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress_mod.time, "perf_counter", clock)
    out = io.StringIO()
    for _ in progress(range(100), desc="prior (marglik)", every_s=10, file=out):
        clock.t += 0.5  # 50 s in all: a line every 10 s, and the last one
    lines = out.getvalue().splitlines()
    assert [int(LINE.match(ln)["done"]) for ln in lines] == [20, 40, 60, 80, 100]
    out = io.StringIO()
    for _ in progress(range(10), desc="quick", every_s=10, file=out):
        clock.t += 0.1  # a stage shorter than the interval stays quiet
    assert out.getvalue() == ""


def test_off_or_disabled_prints_nothing(monkeypatch):
    monkeypatch.setenv("BAYESPEFT_PROGRESS", "0")
    out = io.StringIO()
    assert list(progress(range(3), desc="x", every_s=0, file=out)) == [0, 1, 2] and out.getvalue() == ""
    monkeypatch.delenv("BAYESPEFT_PROGRESS")
    assert list(progress(range(3), desc="x", enabled=False, every_s=0, file=out)) == [0, 1, 2] and out.getvalue() == ""


def toy(n=64, d=6, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = torch.randint(0, k, (n,), generator=g)
    ds = TensorDataset(x, y)
    model = torch.nn.Sequential(torch.nn.Linear(d, 8), torch.nn.Tanh(), torch.nn.Linear(8, k))
    return model, DataLoader(ds, batch_size=16, shuffle=True, generator=g), DataLoader(ds, batch_size=32)


def test_training_prints_a_line_per_epoch_off_a_terminal(no_env, tmp_path, capsys):
    from bayespeft.train import TrainConfig, fit

    model, train, val = toy()
    res = fit(model, train, val, TrainConfig(epochs=3, lr=1e-2), tmp_path / "a")  # progress=None: the stream decides
    err = capsys.readouterr().err
    epochs = [LINE.match(ln) for ln in err.splitlines() if ln.startswith("epochs ")]
    assert [int(m["done"]) for m in epochs] == [1, 2, 3] and all(int(m["total"]) == 3 for m in epochs), err
    for m, h in zip(epochs, res.history):
        assert f"train_loss={h.train_loss:.4g}" in m["post"] and f"val_loss={h.val_loss:.4g}" in m["post"]
    assert seconds(epochs[-1]["eta"]) == 0
    assert "\r" not in err  # no bar redraws in a log file


def test_early_stopping_still_prints_the_last_epoch(no_env, tmp_path, capsys):
    from bayespeft.train import TrainConfig, fit

    model, train, val = toy()
    # no epoch after the first improves by min_delta: patience 1 stops after epoch 2 of 6
    res = fit(model, train, val, TrainConfig(epochs=6, lr=1e-2, patience=1, min_delta=1e9), tmp_path)
    assert res.stopped_early and res.epochs_run == 2
    epochs = [LINE.match(ln) for ln in capsys.readouterr().err.splitlines() if ln.startswith("epochs ")]
    assert [int(m["done"]) for m in epochs] == list(range(1, res.epochs_run + 1))


def test_laplace_prior_tuning_and_sampling_report_off_a_terminal(no_env, monkeypatch, capsys, tmp_path):
    import bayespeft.laplace as bl
    from bayespeft.sgmcmc import SamplerConfig
    from bayespeft.sgmcmc.runner import run_chains

    monkeypatch.setattr(progress_mod, "LINE_INTERVAL_S", 0.0)  # every step, to see them in a test-sized run
    model, train, _ = toy()
    post = bl.fit(model, train, structure="full", subset="all", likelihood="classification")
    post.optimize_prior(method="marglik", n_steps=5)
    run_chains(model, train, SamplerConfig(sampler="sgld", lr=1e-4, epochs=1, burn_in_epochs=0, n_chains=1, probe_size=8),
               store=tmp_path / "samples")
    err = capsys.readouterr().err.splitlines()
    for desc, total in (("Laplace fit (full)", 4), ("prior (marglik)", 5), ("sgld chain 0", 4)):
        mine = [LINE.match(ln) for ln in err if ln.startswith(desc + " ")]
        assert mine and all(m and int(m["total"]) == total for m in mine), (desc, err)


@pytest.mark.parametrize("env", ["0", "lines", "bar"])
def test_progress_never_changes_what_is_computed(env, monkeypatch, tmp_path):
    """The same seeded loader gives the batches of a bare loop in every mode (the asyncio tqdm of ``tqdm.auto`` made
    an extra iterator, which draws from the loader's generator), and training ends with the same weights."""
    from bayespeft.train import TrainConfig, fit

    monkeypatch.setenv("BAYESPEFT_PROGRESS", env)

    def loader():
        return DataLoader(TensorDataset(torch.arange(100)), batch_size=16, shuffle=True,
                          generator=torch.Generator().manual_seed(1))

    bare = [b[0].tolist() for b in loader()]
    assert [b[0].tolist() for b in progress(loader(), desc="x")] == bare
    torch.manual_seed(0)
    model, train, val = toy()
    fit(model, train, val, TrainConfig(epochs=2, lr=1e-2), tmp_path / "shown")
    torch.manual_seed(0)
    ref, train2, val2 = toy()
    monkeypatch.setenv("BAYESPEFT_PROGRESS", "0")
    fit(ref, train2, val2, TrainConfig(epochs=2, lr=1e-2, progress=False), tmp_path / "quiet")
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.equal(p, q)
