"""Rows a loader drops (ARC questions without 4 choices) or truncates (text longer than max_length) are a warning on
stderr, and the data metadata (split sizes, dropped and truncated counts) goes into the run's ``metrics.json``."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from bayespeft.cli import main
from bayespeft.data import DataConfig, build_data
from bayespeft.inputs import InputSpec

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def run_dir(out: str) -> Path:
    return Path([ln for ln in out.splitlines() if ln.startswith("run directory: ")][-1].removeprefix("run directory: "))


def warnings_in(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("warning: ")]


def test_arc_dropped_questions_are_a_warning_per_split(arc_root, gpt2_like_tokenizer, caplog):
    spec = InputSpec(kind="text", tokenizer=gpt2_like_tokenizer, max_length=256)
    with caplog.at_level("WARNING", logger="bayespeft"):
        b = build_data(DataConfig(name="arc_easy", root=str(arc_root)), spec)
    assert b.metadata["dropped"] == {"train": 1, "dev": 0, "test": 1}
    warned = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1, [r.getMessage() for r in warned]
    msg = warned[0].getMessage()
    assert "arc_easy" in msg and "1 of 22 train" in msg and "1 of 9 test" in msg and "4 choices" in msg


def test_arc_run_warns_on_stderr_and_records_the_counts(arc_root, tmp_path, capsys):
    from bayespeft.models.tiny import bpe_tokenizer

    tok_dir = tmp_path / "tok"
    bpe_tokenizer(tok_dir)
    cfg = tmp_path / "arc.yaml"
    cfg.write_text(textwrap.dedent(f"""
        name: tiny-arc
        data: {{name: arc_easy, root: {arc_root}, batch_size: 8, max_length: 12}}
        model: {{name: hf_causal_lm, pretrained: false, tokenizer: {tok_dir}, max_length: 32,
                 overrides: {{model_type: gpt2, n_embd: 32, n_layer: 2, n_head: 2}}}}
        adapter: {{method: lora, r: 2}}
        train: {{epochs: 1, progress: false}}
        output: {{root: {tmp_path / 'runs'}, reliability_plots: false}}
        """))
    assert main(["train", str(cfg)]) == 0
    out, err = capsys.readouterr()
    warned = warnings_in(err)
    assert any("dropped" in w and "1 of 9 test" in w for w in warned), err
    assert any("truncated" in w and "max_length=12" in w for w in warned), err
    data = json.loads((run_dir(out) / "metrics.json").read_text())["data"]
    assert data["dropped"] == {"train": 1, "dev": 0, "test": 1}
    assert data["sizes"] == {"train": 21, "val": 6, "test": 8}
    # every prompt is longer than 12 tokens (independent count: the tokenizer on the kept questions' prompts)
    assert data["truncated"] == {"train": 21, "dev": 6, "test": 8} and data["max_length"] == 12


@pytest.fixture()
def mrpc_cli(tmp_path):
    from bayespeft.assets import find_minilm_dir
    from bayespeft.testing import write_mrpc_tsv

    root = tmp_path / "glue"
    (root / "MRPC").mkdir(parents=True)
    rows = {"train": write_mrpc_tsv(root / "MRPC" / "train.tsv", 30), "test": write_mrpc_tsv(root / "MRPC" / "dev.tsv", 10, 100)}
    sets = ["--set", f"data.root={root}", "--set", f"model.tokenizer={find_minilm_dir()}", "--set",
            f"output.root={tmp_path / 'runs'}", "--set", "output.reliability_plots=false", "--set", "train.progress=false"]
    return rows, sets


def test_mrpc_truncation_is_a_warning_and_recorded(mrpc_cli, capsys):
    from transformers import AutoTokenizer

    from bayespeft.assets import find_minilm_dir

    rows, sets = mrpc_cli
    tok = AutoTokenizer.from_pretrained(str(find_minilm_dir()))
    max_len = 24
    want = {split: sum(len(tok(a, b)["input_ids"]) > max_len for _, a, b in r) for split, r in rows.items()}
    assert 0 < want["train"] < len(rows["train"])  # some pairs are cut, some not: the count is informative
    assert main(["train", str(CONFIGS / "tiny" / "mrpc_roberta_lora.yaml"), *sets, "--set", f"data.max_length={max_len}"]) == 0
    out, err = capsys.readouterr()
    warned = [w for w in warnings_in(err) if "truncated" in w]
    assert len(warned) == 1 and f"{want['train']} of 30 train" in warned[0] and f"max_length={max_len}" in warned[0], err
    data = json.loads((run_dir(out) / "metrics.json").read_text())["data"]
    assert data["truncated"] == want and data["sizes"]["test"] == 10 and data["max_length"] == max_len


def test_nothing_dropped_means_no_warning(capsys, tmp_path):
    assert main(["train", str(CONFIGS / "tiny" / "digits_lora.yaml"), "--set", f"output.root={tmp_path}",
                 "--set", "output.reliability_plots=false", "--set", "train.progress=false"]) == 0
    out, err = capsys.readouterr()
    assert warnings_in(err) == []
    data = json.loads((run_dir(out) / "metrics.json").read_text())["data"]
    assert data["sizes"] == {"train": 64, "val": 144, "test": 64} and data["dropped"] == {} and data["truncated"] == {}
