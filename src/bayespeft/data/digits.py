"""scikit-learn's bundled handwritten digits (UCI optdigits test part): the embedded default dataset.

1797 greyscale 8x8 images, pixel values 0..16 (counts of set pixels in 4x4 blocks of a 32x32 bitmap), 10 classes.
No file I/O beyond scikit-learn's bundled CSV, no download.

Splits (seeded by ``split_seed``, stratified by class): ``test_fraction`` of all images is the test set,
``val_fraction`` of the rest is validation, the remainder trains (defaults 0.2 / 0.1 -> 1294 / 144 / 359).
Pixels are scaled to [0, 1] (divided by 16), then resized/channel-matched/normalised per the model's InputSpec
(see :mod:`bayespeft.data.images`). Training augmentation: a random shift of up to one pixel in each direction
(pad 1 with background 0, random 8x8 crop); no flips (digits are not mirror-invariant).
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms import v2

from ..inputs import InputSpec
from .base import DataBundle, DatasetInfo, check_modality, register_dataset, split_indices, subsample
from .collate import Collator
from .config import DataConfig
from .images import image_splits

INFO = DatasetInfo(num_classes=10, task="image_classification", modality="image")
#: native digit grey levels: sklearn pixels are integers in 0..16.
MAX_LEVEL = 16.0


def load_digit_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(images (1797, 1, 8, 8) float in [0, 1], labels (1797,) long)``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.from_numpy(np.asarray(d.images, dtype=np.float32) / MAX_LEVEL).unsqueeze(1)
    return images, torch.from_numpy(np.asarray(d.target, dtype=np.int64))


def digit_augmentation() -> v2.Transform:
    """Random translation by up to 1 pixel (pad with background, crop back to 8x8)."""
    return v2.RandomCrop(8, padding=1, fill=0.0)


@register_dataset("digits", INFO)
def build_digits(cfg: DataConfig, spec: InputSpec) -> DataBundle:
    check_modality("digits", INFO, spec)
    images, labels = load_digit_arrays()
    y = labels.numpy()
    all_idx = np.arange(len(y))
    pool, test = split_indices(all_idx, y, cfg.test_fraction, cfg.split_seed)
    train, val = split_indices(pool, y[pool], cfg.val_fraction, cfg.split_seed)
    splits = {
        "train": subsample(train, cfg.max_train, cfg.split_seed + 1),
        "val": subsample(val, cfg.max_val, cfg.split_seed + 2),
        "test": subsample(test, cfg.max_test, cfg.split_seed + 3),
    }
    ds = image_splits(
        images, labels, splits, spec,
        augment=digit_augmentation() if cfg.augment else None,
        shift=cfg.shift, severity=cfg.severity, seed=cfg.split_seed,
    )
    return DataBundle(
        train=ds["train"], val=ds["val"], test=ds["test"], test_shift=ds["test_shift"],
        num_classes=INFO.num_classes, task=INFO.task, modality=INFO.modality, collate_fn=Collator(),
        seed=cfg.split_seed, batch_size=cfg.batch_size, eval_batch_size=cfg.eval_batch_size, num_workers=cfg.num_workers,
        metadata={"sizes": {k: len(v) for k, v in splits.items()}, "shift": cfg.shift, "shift_severity": cfg.severity,
                  "class_names": [str(i) for i in range(10)]},
    )
