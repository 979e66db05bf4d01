"""CIFAR-10/100 read through torchvision from python-pickle directories in the official layout."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bayespeft.data import DataConfig, build_data
from bayespeft.errors import DataError
from bayespeft.inputs import InputSpec

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
SPEC = InputSpec(kind="image", image_size=32, in_chans=3, mean=MEAN, std=STD)


def _cfg(root, name="cifar10", **kw) -> DataConfig:
    # our fixtures are not the official bytes: md5 verification must be off for them (see bayespeft.data.cifar)
    return DataConfig(name=name, root=str(root), verify_checksums=False, **kw)


def _raw(path, key="labels"):
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")  # the CIFAR web page's recipe: bytes keys
    return d[b"data"].reshape(-1, 3, 32, 32), np.asarray(d[key.encode()])


def _norm(x_uint8: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(x_uint8).float() / 255
    return (x - torch.tensor(MEAN).view(-1, 3, 1, 1)) / torch.tensor(STD).view(-1, 3, 1, 1)


def test_cifar10_splits_labels_and_normalisation(cifar10_root):
    b = build_data(_cfg(cifar10_root, val_fraction=0.2), SPEC)
    assert (b.num_classes, b.task, b.modality) == (10, "image_classification", "image")
    assert b.metadata["class_names"][:3] == ["airplane", "automobile", "bird"]
    assert (len(b.train), len(b.val), len(b.test)) == (80, 20, 20)
    assert not set(b.train.indices.tolist()) & set(b.val.indices.tolist())
    assert torch.equal(torch.bincount(b.val.targets, minlength=10), torch.full((10,), 2))  # stratified
    test_x, test_y = _raw(cifar10_root / "cifar-10-batches-py" / "test_batch")
    items = [b.test[i] for i in range(len(b.test))]
    assert torch.equal(torch.stack([it["labels"] for it in items]), torch.from_numpy(test_y).long())
    assert torch.allclose(torch.stack([it["pixel_values"] for it in items]), _norm(test_x), atol=1e-6)
    # val rows come from the official train batches, in file order, untouched by augmentation
    train_x = np.concatenate([_raw(cifar10_root / "cifar-10-batches-py" / f"data_batch_{k}")[0] for k in range(1, 6)])
    v = b.val.indices.numpy()
    assert torch.allclose(torch.stack([b.val[i]["pixel_values"] for i in range(len(b.val))]), _norm(train_x[v]), atol=1e-6)


def test_split_is_seeded(cifar10_root):
    a, b = build_data(_cfg(cifar10_root), SPEC), build_data(_cfg(cifar10_root), SPEC)
    c = build_data(_cfg(cifar10_root, split_seed=7), SPEC)
    assert torch.equal(a.val.indices, b.val.indices)
    assert not torch.equal(a.val.indices, c.val.indices)


def test_augmentation_only_on_train(cifar10_root):
    b = build_data(_cfg(cifar10_root), SPEC)
    torch.manual_seed(0)
    draws = torch.stack([b.train[0]["pixel_values"] for _ in range(6)])
    assert not all(torch.equal(draws[0], d) for d in draws[1:])
    assert torch.equal(b.val[0]["pixel_values"], b.val[0]["pixel_values"])
    assert torch.equal(b.test[0]["pixel_values"], b.test[0]["pixel_values"])
    plain = build_data(_cfg(cifar10_root, augment=False), SPEC)
    assert torch.equal(plain.train[0]["pixel_values"], plain.train[0]["pixel_values"])


def test_resize_to_the_model_resolution(cifar10_root):
    spec = InputSpec(kind="image", image_size=64, in_chans=3, mean=MEAN, std=STD)
    b = build_data(_cfg(cifar10_root, max_test=4), spec)
    x = torch.stack([b.test[i]["pixel_values"] for i in range(4)])
    test_x, _ = _raw(cifar10_root / "cifar-10-batches-py" / "test_batch")
    up = F.interpolate(torch.from_numpy(test_x[b.test.indices.numpy()]).float() / 255, size=(64, 64), mode="bilinear", align_corners=False)
    assert x.shape == (4, 3, 64, 64)
    assert torch.allclose(x, (up - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1), atol=1e-5)
    assert b.train[0]["pixel_values"].shape == (3, 64, 64)


def test_cifar100_uses_fine_labels(cifar100_root):
    b = build_data(_cfg(cifar100_root, name="cifar100", val_fraction=0.5), SPEC)
    assert b.num_classes == 100 and len(b.metadata["class_names"]) == 100
    _, fine = _raw(cifar100_root / "cifar-100-python" / "test", key="fine_labels")
    assert torch.equal(b.test.targets, torch.from_numpy(fine).long())
    assert b.test.targets.max() == 99
    assert (len(b.train), len(b.val)) == (100, 100)


def test_noise_shift_on_cifar(cifar10_root):
    b = build_data(_cfg(cifar10_root, shift="noise", shift_severity=0.1, max_test=6), SPEC)
    assert torch.equal(b.test_shift.targets, b.test.targets)
    assert not torch.equal(b.test_shift[0]["pixel_values"], b.test[0]["pixel_values"])
    assert torch.equal(b.test_shift[2]["pixel_values"], b.test_shift[2]["pixel_values"])


def test_missing_directory_names_the_path_layout_and_download(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)cifar-10-batches-py.*does not exist.*data_batch_1\.\.5.*data\.download=true"):
        build_data(DataConfig(name="cifar10", root=str(tmp_path)), SPEC)
    with pytest.raises(FileNotFoundError, match=r"(?s)cifar-100-python.*download"):
        build_data(DataConfig(name="cifar100", root=str(tmp_path)), SPEC)


def test_missing_file_is_named(cifar10_root, tmp_path):
    root = tmp_path / "partial"
    shutil.copytree(cifar10_root, root)
    (root / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks test_batch.*download"):
        build_data(_cfg(root), SPEC)


def test_md5_verification_rejects_non_official_files(cifar10_root):
    with pytest.raises(DataError, match=r"md5 of .*data_batch_1.*does not match the official release.*verify_checksums=false"):
        build_data(DataConfig(name="cifar10", root=str(cifar10_root)), SPEC)


def test_official_md5s_are_checked_when_files_match(cifar10_root, tmp_path, monkeypatch):
    """With verify on, files whose md5 matches the recorded sums load (sums patched to our fixture's bytes)."""
    import hashlib

    from bayespeft.data import cifar

    base = cifar10_root / "cifar-10-batches-py"
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in base.iterdir()}
    monkeypatch.setattr(cifar.CheckedCIFAR10, "train_list", [[f"data_batch_{k}", md5[f"data_batch_{k}"]] for k in range(1, 6)])
    monkeypatch.setattr(cifar.CheckedCIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(cifar.CheckedCIFAR10, "meta", {"filename": "batches.meta", "key": "label_names", "md5": md5["batches.meta"]})
    b = build_data(DataConfig(name="cifar10", root=str(cifar10_root)), SPEC)
    assert len(b.test) == 20
