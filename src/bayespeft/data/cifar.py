"""CIFAR-10 / CIFAR-100 from the official "python version" archives, read by ``torchvision.datasets``.

Expected layout (what ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` extract to)::

    <root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
    <root>/cifar-100-python/{train, test, meta}

``data.download=true`` fetches the official archive (``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``) into
``<root>`` with torchvision's downloader, checks its md5 (and size) against the official release when
``verify_checksums``, and extracts it (:func:`download_cifar`); nothing is fetched when the files are already there.
A failed download, an md5 mismatch and a truncated archive each raise a :class:`~bayespeft.errors.DataError` naming the
file and what to do.

Integrity: the files are pickles, so by default (``verify_checksums=True``) every file's md5 is compared with the
sums torchvision records for the official release *before* anything is unpickled; only the byte-exact official
files are ever loaded. ``verify_checksums=False`` replaces that by an existence check (our torchvision subclasses
override only ``_check_integrity`` and ``_load_meta``) -- for files you wrote yourself in the same format (e.g.
tests). It unpickles whatever is there, so never use it on files you do not trust.

Splits: ``val_fraction`` of the official training set (seeded, stratified) is validation, the rest trains; the
official test set is the test split. Train items: RandomCrop(32, padding=4) + RandomHorizontalFlip (when
``augment``), then resize to ``spec.image_size`` and normalise with the spec's mean/std; val/test: resize + normalise.
Items: ``{"pixel_values": (C, S, S) float32, "labels": long}``.
"""

from __future__ import annotations

import os
import pickle
import tarfile
import urllib.error
import zlib
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.datasets.utils import calculate_md5, check_integrity, download_url, extract_archive
from torchvision.transforms import v2

from ..errors import DataError
from ..inputs import InputSpec
from .base import DataBundle, DatasetInfo, check_modality, register_dataset, split_indices, subsample
from .collate import Collator
from .config import DataConfig
from .images import image_splits


class _Verifiable:
    """Mixin: keep torchvision's md5 check when ``verify`` is True, else only require the files to exist."""

    _verify: bool = True

    def _check_integrity(self) -> bool:
        if self._verify:
            return super()._check_integrity()  # type: ignore[misc]
        files = [f for f, _ in self.train_list + self.test_list] + [self.meta["filename"]]  # type: ignore[attr-defined]
        return all(os.path.isfile(os.path.join(self.root, self.base_folder, f)) for f in files)  # type: ignore[attr-defined]

    def _load_meta(self) -> None:
        if self._verify:
            return super()._load_meta()  # type: ignore[misc]
        path = os.path.join(self.root, self.base_folder, self.meta["filename"])  # type: ignore[attr-defined]
        with open(path, "rb") as f:
            data = pickle.load(f, encoding="latin1")
        self.classes = data[self.meta["key"]]  # type: ignore[attr-defined]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


class CheckedCIFAR10(_Verifiable, CIFAR10):
    def __init__(self, root: str | Path, train: bool, download: bool, verify: bool) -> None:
        self._verify = verify
        super().__init__(str(root), train=train, download=download)


class CheckedCIFAR100(_Verifiable, CIFAR100):
    def __init__(self, root: str | Path, train: bool, download: bool, verify: bool) -> None:
        self._verify = verify
        super().__init__(str(root), train=train, download=download)


_CLASSES = {"cifar10": CheckedCIFAR10, "cifar100": CheckedCIFAR100}
_LAYOUT = {
    "cifar10": "<root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}",
    "cifar100": "<root>/cifar-100-python/{train,test,meta}",
}


def _required_files(cls: type) -> list[str]:
    return [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]


#: sizes in bytes of the official archives (their md5s are torchvision's ``tgz_md5``); tells truncated from altered.
ARCHIVE_BYTES = {"cifar10": 170_498_071, "cifar100": 169_001_437}


def _file_problems(name: str, root: Path, verify: bool) -> tuple[list[str], list[str]]:
    """``(missing, bad_md5)`` file names of the extracted release under ``root`` (md5s only checked when ``verify``)."""
    cls = _CLASSES[name]
    base = root / cls.base_folder
    missing = [f for f in _required_files(cls) if not (base / f).is_file()]
    if missing or not verify:
        return missing, []
    sums = [(f, md5) for f, md5 in cls.train_list + cls.test_list] + [(cls.meta["filename"], cls.meta["md5"])]
    return [], [f for f, md5 in sums if not check_integrity(str(base / f), md5)]


def _check_files(name: str, root: Path, verify: bool) -> None:
    """Raise a FileNotFoundError naming the path and layout, or (``verify``) a DataError on an md5 mismatch."""
    cls = _CLASSES[name]
    base = root / cls.base_folder
    missing, bad = _file_problems(name, root, verify)
    if missing:
        what = f"directory {base} does not exist" if not base.is_dir() else f"{base} lacks {', '.join(missing)}"
        raise FileNotFoundError(
            f"{name}: {what}. Expected the official python-version layout {_LAYOUT[name]} with data.root={str(root)!r}. "
            f"Set data.download=true (CLI: --set data.download=true) to download it, or point data.root at the "
            f"directory that contains {cls.base_folder}/."
        )
    if bad:
        raise DataError(
            f"{name}: md5 of {', '.join(str(base / f) for f in bad)} does not match the official release; "
            "re-download (data.download=true after deleting the folder), or set data.verify_checksums=false "
            "only if you created these files yourself"
        )


def download_cifar(name: str, root: str | Path, verify: bool = True) -> Path:
    """Fetch the official archive of ``name`` into ``root`` (unless it is there), check it and extract it.

    The archive's md5 is compared with the official one when ``verify`` (then a short file is reported as truncated,
    by its size); every failure -- no network, an md5 mismatch, an archive that does not extract -- raises a one-line
    :class:`~bayespeft.errors.DataError` naming the file and what to do. A partial download is removed; an archive
    that fails its check is kept (for inspection) and the message says to delete it. Returns the archive path.
    """
    cls, root = _CLASSES[name], Path(root)
    archive = root / cls.filename
    fresh = f"delete {archive} and run again to download it afresh"
    if not archive.is_file():
        try:
            root.mkdir(parents=True, exist_ok=True)
            download_url(cls.url, str(root), cls.filename)  # md5 checked below, with a clearer message
        except OSError as e:  # urllib.error.URLError is an OSError; also disk full / permission denied
            archive.unlink(missing_ok=True)
            reason = e.reason if isinstance(e, urllib.error.URLError) else e
            raise DataError(
                f"{name}: could not download {cls.url} to {archive} ({reason}); check the network connection "
                f"(proxy: HTTPS_PROXY) and that {root} is writable, or fetch the file elsewhere and put it at "
                f"{archive}, or extract a copy into {root} and set data.download=false"
            ) from None
    if verify:
        md5 = calculate_md5(str(archive))
        if md5 != cls.tgz_md5:
            size, expected = archive.stat().st_size, ARCHIVE_BYTES[name]
            what = (f"truncated ({size:,} of {expected:,} bytes; an interrupted download?)" if size < expected
                    else "not the official archive")
            raise DataError(f"{name}: {archive} is {what}: its md5 is {md5}, the official one {cls.tgz_md5}; {fresh}")
    try:
        extract_archive(str(archive), str(root))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f"{name}: could not extract {archive}, it is truncated or corrupt ({e}); {fresh}") from None
    return archive


def load_cifar_arrays(
    name: str, root: str | Path, download: bool = False, verify: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """Return ``(train_images, train_labels, test_images, test_labels, class_names)`` of the official release:
    images (N, 3, 32, 32) uint8, labels (N,) long. Files are md5-checked once (when ``verify``) before unpickling;
    with ``download`` a missing (or, when ``verify``, altered) release is fetched first (:func:`download_cifar`)."""
    if name not in _CLASSES:
        raise ValueError(f"unknown CIFAR variant {name!r}; allowed: {sorted(_CLASSES)}")
    root, cls = Path(root), _CLASSES[name]
    if download and any(_file_problems(name, root, verify)):
        download_cifar(name, root, verify)
    _check_files(name, root, verify)
    out: list = []
    for train in (True, False):
        ds = cls(root, train=train, download=False, verify=False)  # md5 already verified above
        out.append(torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2))))
        out.append(torch.as_tensor(np.asarray(ds.targets, dtype=np.int64)))
    return (*out, list(ds.classes))


def cifar_augmentation() -> v2.Transform:
    """The standard CIFAR training augmentation: 4-pixel zero-padded random crop and horizontal flip."""
    return v2.Compose([v2.RandomCrop(32, padding=4, fill=0.0), v2.RandomHorizontalFlip()])


def _build(name: str, info: DatasetInfo, cfg: DataConfig, spec: InputSpec) -> DataBundle:
    check_modality(name, info, spec)
    images, labels, test_images, test_labels, classes = load_cifar_arrays(name, cfg.root, cfg.download, cfg.verify_checksums)
    if len(classes) != info.num_classes:
        raise ValueError(f"{name}: the meta file lists {len(classes)} classes, expected {info.num_classes}")
    for split, lab in (("train", labels), ("test", test_labels)):
        if len(lab) and (int(lab.min()) < 0 or int(lab.max()) >= info.num_classes):
            raise ValueError(f"{name}: {split} labels must lie in [0, {info.num_classes}), found [{int(lab.min())}, {int(lab.max())}]")
    train, val = split_indices(np.arange(len(labels)), labels.numpy(), cfg.val_fraction, cfg.split_seed)
    splits = {
        "train": subsample(train, cfg.max_train, cfg.split_seed + 1),
        "val": subsample(val, cfg.max_val, cfg.split_seed + 2),
        "test": subsample(np.arange(len(test_labels)), cfg.max_test, cfg.split_seed + 3),
    }
    ds = image_splits(
        images, labels, splits, spec,
        augment=cifar_augmentation() if cfg.augment else None,
        shift=cfg.shift, severity=cfg.severity, seed=cfg.split_seed,
        test_images=test_images, test_labels=test_labels,
    )
    return DataBundle(
        train=ds["train"], val=ds["val"], test=ds["test"], test_shift=ds["test_shift"],
        num_classes=info.num_classes, task=info.task, modality=info.modality, collate_fn=Collator(),
        seed=cfg.split_seed, batch_size=cfg.batch_size, eval_batch_size=cfg.eval_batch_size, num_workers=cfg.num_workers,
        metadata={"sizes": {k: len(v) for k, v in splits.items()}, "class_names": classes,
                  "shift": cfg.shift, "shift_severity": cfg.severity},
    )


CIFAR10_INFO = DatasetInfo(num_classes=10, task="image_classification", modality="image")
CIFAR100_INFO = DatasetInfo(num_classes=100, task="image_classification", modality="image")


@register_dataset("cifar10", CIFAR10_INFO)
def build_cifar10(cfg: DataConfig, spec: InputSpec) -> DataBundle:
    return _build("cifar10", CIFAR10_INFO, cfg, spec)


@register_dataset("cifar100", CIFAR100_INFO)
def build_cifar100(cfg: DataConfig, spec: InputSpec) -> DataBundle:
    return _build("cifar100", CIFAR100_INFO, cfg, spec)
