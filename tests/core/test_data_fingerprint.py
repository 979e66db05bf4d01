"""The results CSV tells results on different data apart by what the data holds, not where it lies: a content
fingerprint of the evaluated split enters the result key (``data_fingerprint`` column). Evaluating one checkpoint on
a moved copy of the data adds no row; on a copy with three test labels edited it adds one. CSVs written before the
column existed are migrated, and their rows (fingerprint unknown) are never taken for a new result."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import pandas as pd
import torch

from bayespeft.cli import main
from bayespeft.data.fingerprint import dataset_fingerprint
from bayespeft.data.text import TokenizedDataset
from bayespeft.testing import py2_dump, write_cifar10, write_tiny_digits_config

torch.set_num_threads(1)


def test_fingerprint_follows_contents_and_order_only():
    enc = {"input_ids": [[5, 6, 7], [8, 9], [10]], "attention_mask": [[1, 1, 1], [1, 1], [1]]}
    base = TokenizedDataset(enc, [0, 1, 0])
    fp = dataset_fingerprint(base)
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert dataset_fingerprint(TokenizedDataset({k: [list(r) for r in v] for k, v in enc.items()}, [0, 1, 0])) == fp
    assert dataset_fingerprint(TokenizedDataset(enc, [0, 1, 1])) != fp  # one label
    assert dataset_fingerprint(TokenizedDataset({**enc, "input_ids": [[5, 6, 7], [8, 9], [11]]}, [0, 1, 0])) != fp
    assert dataset_fingerprint(TokenizedDataset(enc, [0, 1, 0], indices=[0, 2, 1])) != fp  # another order
    assert dataset_fingerprint(TokenizedDataset(enc, [0, 1, 0], indices=[0, 1])) != fp  # fewer examples
    # item boundaries are part of the hash: [5, 6] + [7] is not [5] + [6, 7]
    a = TokenizedDataset({"input_ids": [[5, 6], [7]]}, [0, 0])
    b = TokenizedDataset({"input_ids": [[5], [6, 7]]}, [0, 0])
    assert dataset_fingerprint(a) != dataset_fingerprint(b)


def test_image_fingerprint_follows_stored_images_labels_rows_and_pipeline():
    from bayespeft.data.images import ImageDataset, ImagePipeline
    from bayespeft.inputs import InputSpec

    gen = torch.Generator().manual_seed(0)
    images, labels = torch.randint(0, 256, (12, 3, 8, 8), generator=gen, dtype=torch.uint8), torch.arange(12) % 4
    spec = InputSpec(kind="image", image_size=16, in_chans=3, mean=(0.5,), std=(0.25,))

    def fp(imgs=images, labs=labels, rows=(1, 3, 5, 7), **pipe):
        return dataset_fingerprint(ImageDataset(imgs, labs, list(rows), ImagePipeline(spec, 8, 3, **pipe)))

    ref = fp()
    assert fp(images.clone(), labels.clone()) == ref  # other tensors, same contents
    other = images.clone()
    other[0, 0, 0, 0] ^= 1  # a row not in the split
    assert fp(other) == ref
    other[3, 2, 7, 7] ^= 1  # one value of one image of the split
    assert fp(other) != ref
    lab = labels.clone()
    lab[5] = (lab[5] + 1) % 4
    assert fp(labs=lab) != ref
    assert fp(rows=(1, 3, 5)) != ref and fp(rows=(1, 3, 5, 9)) != ref
    assert fp(shift="noise", severity=0.1) != ref != fp(shift="rotate", severity=5.0)
    assert fp(shift="noise", severity=0.1, seed=1) != fp(shift="noise", severity=0.1)
    assert fp(shift="rotate", severity=5.0) != fp(shift="rotate", severity=10.0)
    small = InputSpec(kind="image", image_size=8, in_chans=3, mean=(0.5,), std=(0.25,))
    assert dataset_fingerprint(ImageDataset(images, labels, [1, 3, 5, 7], ImagePipeline(small, 8, 3))) != ref
    other_norm = InputSpec(kind="image", image_size=16, in_chans=3, mean=(0.5,), std=(0.5,))
    assert dataset_fingerprint(ImageDataset(images, labels, [1, 3, 5, 7], ImagePipeline(other_norm, 8, 3))) != ref


def _edit_test_labels(root: Path, n: int) -> None:
    """Change the labels of the first ``n`` test images of a CIFAR-10 copy (images untouched)."""
    path = root / "cifar-10-batches-py" / "test_batch"
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    d[b"labels"] = [(v + 1) % 10 if i < n else v for i, v in enumerate(d[b"labels"])]
    py2_dump(d, path)


def test_same_data_elsewhere_is_a_duplicate_edited_data_a_new_row(tmp_path, capsys):
    a = tmp_path / "a"
    write_cifar10(a)
    shutil.copytree(a, tmp_path / "b")
    shutil.copytree(a, tmp_path / "c")
    _edit_test_labels(tmp_path / "c", 3)
    cfg = tmp_path / "cifar.yaml"
    cfg.write_text(
        "name: fp\n"
        f"data: {{name: cifar10, root: {a}, verify_checksums: false, batch_size: 20, eval_batch_size: 7}}\n"
        "model: {name: micro_vit, pretrained: false}\nadapter: {method: normtune}\n"
        "train: {epochs: 1, lr: 0.005, seed: 3, progress: false}\n"
        f"output: {{root: {tmp_path / 'runs'}, reliability_plots: false}}\n")
    assert main(["train", str(cfg)]) == 0
    (run,) = (tmp_path / "runs").glob("fp-*")
    csv = tmp_path / "runs" / "results.csv"
    capsys.readouterr()
    # another directory holding the same files, another eval batch size: the same result
    assert main(["evaluate", str(cfg), "--checkpoint", str(run), "--set", f"data.root={tmp_path / 'b'}",
                 "--set", "data.eval_batch_size=5"]) == 0
    assert "already in" in capsys.readouterr().err
    assert len(pd.read_csv(csv)) == 1
    # three test labels edited: another result, recorded
    assert main(["evaluate", str(cfg), "--checkpoint", str(run), "--set", f"data.root={tmp_path / 'c'}"]) == 0
    assert "already in" not in capsys.readouterr().err
    df = pd.read_csv(csv, dtype=str)
    assert len(df) == 2 and df["result_key"].nunique() == 2 and df["checkpoint"].nunique() == 1
    assert df["data_fingerprint"].nunique() == 2 and df["data_fingerprint"].str.len().tolist() == [16, 16]
    assert df["acc@1"].iloc[0] != df["acc@1"].iloc[1] or df["nll"].iloc[0] != df["nll"].iloc[1]


def _legacy_key(cfg, checkpoint: str, split: str) -> str:
    """The result key a MAP row got before the data fingerprint existed (the key's source as it was then)."""
    from bayespeft.experiments.run import DATA_KEY_IGNORES, model_key

    src = {"checkpoint": checkpoint, "run": None, "model": model_key(cfg),
           "adapter": {k: v for k, v in cfg.adapter.model_dump(mode="json").items() if k != "dropout"},
           "data": {k: v for k, v in cfg.data.model_dump(mode="json").items() if k not in DATA_KEY_IGNORES},
           "posterior": "map", "settings": {}, "split": split}
    return hashlib.sha256(json.dumps(src, sort_keys=True, default=str).encode()).hexdigest()


def test_a_csv_without_the_fingerprint_column_is_migrated_and_its_rows_never_match(tmp_path, capsys):
    from bayespeft.config import load_config
    from bayespeft.experiments.records import KEYED_COLUMNS, RESULT_COLUMNS

    cfg = write_tiny_digits_config(tmp_path / "d.yaml", "old", tmp_path / "runs", method="normtune",
                                   reliability_plots=False)
    assert main(["train", str(cfg)]) == 0
    (run,) = (tmp_path / "runs").glob("old-*")
    csv = tmp_path / "runs" / "results.csv"
    new = pd.read_csv(csv, dtype=str, keep_default_na=False).iloc[0]
    # the same row as the previous version wrote it: its header, its key
    old = {k: new[k] for k in KEYED_COLUMNS}
    old["result_key"] = _legacy_key(load_config(cfg), new["checkpoint"], "test")
    csv.write_text(",".join(KEYED_COLUMNS) + "\n" + ",".join(old.values()) + "\n")
    capsys.readouterr()
    assert main(["evaluate", str(cfg), "--checkpoint", str(run)]) == 0
    assert "already in" not in capsys.readouterr().err  # an unknown fingerprint is not the same data
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    assert list(df.columns) == RESULT_COLUMNS and len(df) == 2
    assert {k: df[k].iloc[0] for k in KEYED_COLUMNS} == old and df["data_fingerprint"].iloc[0] == ""
    assert df["data_fingerprint"].iloc[1] == new["data_fingerprint"] != ""
    assert df["result_key"].iloc[1] == new["result_key"]
    # now migrated: evaluating again is a duplicate of the new row
    assert main(["evaluate", str(cfg), "--checkpoint", str(run)]) == 0
    assert "already in" in capsys.readouterr().err and len(pd.read_csv(csv)) == 2
