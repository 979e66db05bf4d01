"""The ensemble predictive (one pass over the evaluation split per posterior sample: often the longest stage of a
sampling run) shows progress like every long loop: lines ``DESC k/S`` off a terminal, nothing when asked not to and
nothing by default in the library; what it computes does not depend on it."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import bayespeft.progress
from bayespeft.sgmcmc import SampleStore
from bayespeft.sgmcmc.predict import ensemble_predict
from tests.sgmcmc.test_sample_resume import config, trained  # noqa: F401  (the module-scoped MAP run fixture)


def lines(text: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"^(.+? \d+/\d+) \| elapsed", text, re.M)]


@pytest.fixture
def every_item(monkeypatch):
    monkeypatch.setattr(bayespeft.progress, "LINE_INTERVAL_S", 0.0)
    monkeypatch.setenv("BAYESPEFT_PROGRESS", "lines")


def test_library_ensemble_prints_a_line_per_sample_only_when_asked(tmp_path, every_item, capsys):
    torch.manual_seed(0)
    model = nn.Linear(3, 4)
    store = SampleStore(tmp_path)
    for s in range(3):
        store.add(0, {"weight": torch.randn(4, 3), "bias": torch.randn(4)}, step=s)
    loader = [(torch.randn(5, 3), torch.zeros(5, dtype=torch.long)) for _ in range(2)]
    quiet = ensemble_predict(model, store, loader)
    assert capsys.readouterr().err == ""  # the library default: no output
    shown = ensemble_predict(model, store, loader, indices=[0, 2], show_progress=None, desc="ens")
    assert lines(capsys.readouterr().err) == ["ens 1/2", "ens 2/2"]
    assert torch.equal(shown, ensemble_predict(model, store, loader, indices=[0, 2]))
    assert torch.equal(quiet, ensemble_predict(model, store, loader, show_progress=True))
    assert lines(capsys.readouterr().err) == ["ensemble predictive 1/3", "ensemble predictive 2/3",
                                              "ensemble predictive 3/3"]


def test_sample_command_shows_the_ensemble_of_each_split(tmp_path, trained, every_item, capsys):  # noqa: F811
    from bayespeft.experiments.sample import sample_run

    cfg = config(tmp_path)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"progress": None}),
                                 "data": cfg.data.model_copy(update={"shift": "rotate", "shift_severity": 15.0})})
    out = sample_run(cfg, checkpoint=trained)
    n = out["sgmcmc"]["n_samples"]
    got = [ln for ln in lines(capsys.readouterr().err) if "ensemble" in ln]
    assert got == [f"sgld ensemble of {n} samples on {split} {k}/{n}" for split in ("test", "test_shift")
                   for k in range(1, n + 1)]
