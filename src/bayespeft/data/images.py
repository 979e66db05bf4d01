"""Image datasets held as tensors, and the per-item pipeline that turns a stored image into model input.

Pipeline for one stored image ``x`` (C0, H0, W0), uint8 in [0, 255] or float in [0, 1]:

1. scale to float in [0, 1];
2. training augmentation (train split only; a torchvision v2 transform on the native-resolution image);
3. distribution shift (shifted test split only), at native resolution in [0, 1] pixel space so the shifted set is
   the same whatever the model resolution: ``rotate`` turns the image by ``severity`` degrees (bilinear, fill 0);
   ``noise`` adds ``severity * eps``, ``eps ~ N(0, I)`` drawn from a generator seeded by ``(seed, example index)``,
   then clips to [0, 1] (as CIFAR-10-C's Gaussian noise) -- deterministic per example;
4. bilinear resize to ``spec.image_size`` (when it differs from the native size);
5. channel matching: 1 -> C by repetition; 3 -> 1 by ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B``;
6. normalisation ``(x - mean_c) / std_c`` with the spec's per-channel mean/std (skipped when the spec has none).

Output ``pixel_values``: float32 (C, image_size, image_size).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ..inputs import InputSpec

_LUMA = torch.tensor([0.299, 0.587, 0.114])


class ImagePipeline:
    """Steps 1-6 above for one split. Picklable (DataLoader workers)."""

    def __init__(
        self,
        spec: InputSpec,
        native_size: int,
        native_chans: int,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        shift: str = "none",
        severity: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.size = native_size if spec.image_size is None else int(spec.image_size)
        self.chans = native_chans if spec.in_chans is None else int(spec.in_chans)
        if self.size < 1 or self.chans < 1:
            raise ValueError(f"InputSpec needs a positive image_size and in_chans, got {spec.image_size} and {spec.in_chans}")
        if self.chans != native_chans and not (native_chans == 1 or (native_chans == 3 and self.chans == 1)):
            raise ValueError(
                f"cannot map {native_chans}-channel images to {self.chans} channels; supported: 1 -> any (repeat), 3 -> 1 (luma)"
            )
        self.mean, self.std = _norm_stats(spec, self.chans)
        if shift not in ("none", "rotate", "noise"):
            raise ValueError(f"unknown shift {shift!r}; allowed: 'none', 'rotate', 'noise'")
        self.native_size, self.native_chans = native_size, native_chans
        self.augment, self.shift, self.severity, self.seed = augment, shift, float(severity), int(seed)

    def __call__(self, x: torch.Tensor, index: int) -> torch.Tensor:
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if self.augment is not None:
            x = self.augment(x)
        if self.shift == "rotate":
            x = TF.rotate(x, self.severity, interpolation=v2.InterpolationMode.BILINEAR, fill=0.0)
        elif self.shift == "noise":
            gen = torch.Generator().manual_seed((self.seed * 1_000_003 + int(index)) % (2**63))
            x = (x + self.severity * torch.randn(x.shape, generator=gen)).clamp_(0.0, 1.0)
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = TF.resize(x, [self.size, self.size], interpolation=v2.InterpolationMode.BILINEAR, antialias=True)
        if self.chans != x.shape[0]:
            x = x.expand(self.chans, -1, -1).contiguous() if x.shape[0] == 1 else torch.einsum("c,chw->hw", _LUMA, x)[None]
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x


def _norm_stats(spec: InputSpec, chans: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    mean, std = tuple(spec.mean or ()), tuple(spec.std or ())
    if not mean and not std:
        return None, None
    if len(mean) != len(std) or len(mean) not in (1, chans):
        raise ValueError(
            f"InputSpec mean/std must both have 1 or in_chans={chans} values, got mean={mean} and std={std}"
        )
    if any(s <= 0 for s in std):
        raise ValueError(f"InputSpec std values must be positive, got {std}")
    m = torch.tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).reshape(-1, 1, 1)
    return m, s


class ImageDataset(Dataset):
    """``images[indices[i]]`` through ``pipeline`` -> ``{"pixel_values": (C, H, W) float, "labels": long}``.

    ``images``: (N, C0, H0, W0) uint8 or float tensor shared (not copied) between the splits of one dataset;
    ``indices``: the rows of this split (sorted, into ``images``).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, indices: Sequence[int] | np.ndarray, pipeline: ImagePipeline) -> None:
        self.images, self.labels, self.pipeline = images, labels.long(), pipeline
        self.indices = torch.as_tensor(np.asarray(indices, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        idx = int(self.indices[i])
        return {"pixel_values": self.pipeline(self.images[idx], idx), "labels": self.labels[idx]}

    @property
    def targets(self) -> torch.Tensor:
        """Labels of this split, (len(self),) long."""
        return self.labels[self.indices]

    def fingerprint_parts(self) -> dict[str, Any]:
        """What determines this split's items, for :func:`bayespeft.data.fingerprint.dataset_fingerprint`: the
        stored images and labels of its rows (in order) and the pipeline's settings -- as cheap to hash as the
        stored bytes, where hashing the items would resize every image."""
        pipe = self.pipeline
        return {"images": self.images[self.indices], "labels": self.labels[self.indices],
                "pipeline": [pipe.size, pipe.chans, pipe.native_size, pipe.native_chans, pipe.shift, pipe.severity,
                             pipe.seed, pipe.mean, pipe.std, repr(pipe.augment)]}


def image_splits(
    images: torch.Tensor,
    labels: torch.Tensor,
    splits: dict[str, np.ndarray],
    spec: InputSpec,
    *,
    augment: Callable[[torch.Tensor], torch.Tensor] | None,
    shift: str,
    severity: float,
    seed: int,
    test_images: torch.Tensor | None = None,
    test_labels: torch.Tensor | None = None,
) -> dict[str, ImageDataset | None]:
    """Build train (augmented), val, test and test_shift (None when ``shift == 'none'``) datasets.

    ``splits`` maps "train"/"val"/"test" to row indices; test rows index ``test_images`` when given (an official
    test set stored separately), else ``images``.
    """
    size, chans = int(images.shape[-1]), int(images.shape[1])
    clean = ImagePipeline(spec, size, chans)
    train = ImagePipeline(spec, size, chans, augment=augment)
    timg = images if test_images is None else test_images
    tlab = labels if test_labels is None else test_labels
    out: dict[str, ImageDataset | None] = {
        "train": ImageDataset(images, labels, splits["train"], train),
        "val": ImageDataset(images, labels, splits["val"], clean),
        "test": ImageDataset(timg, tlab, splits["test"], clean),
        "test_shift": None,
    }
    if shift != "none":
        shifted = ImagePipeline(spec, size, chans, shift=shift, severity=severity, seed=seed)
        out["test_shift"] = ImageDataset(timg, tlab, splits["test"], shifted)
    return out
