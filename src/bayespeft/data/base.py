"""Dataset registry, the :class:`DataBundle` every builder returns, and seeded split/subsample helpers."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset

from .registry import DATASETS  # noqa: F401  (re-exported: the registry lives in a torch-free module)

#: Loaders report dropped and truncated rows here as WARNINGs (the CLI prints them as ``warning: ...`` on stderr).
log = logging.getLogger("bayespeft.data")

if TYPE_CHECKING:
    from ..inputs import InputSpec
    from .config import DataConfig


Task = Literal["image_classification", "sequence_classification", "multiple_choice"]
Modality = Literal["image", "text"]


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset (known without reading any file)."""

    num_classes: int
    task: Task
    modality: Modality


@dataclass(frozen=True)
class DatasetEntry:
    info: DatasetInfo
    build: Callable[[DataConfig, InputSpec], DataBundle]




def register_dataset(name: str, info: DatasetInfo) -> Callable:
    """Decorator registering ``build(cfg, spec) -> DataBundle`` under ``name`` with its :class:`DatasetInfo`."""

    def deco(fn: Callable) -> Callable:
        DATASETS.register(name, DatasetEntry(info=info, build=fn))
        return fn

    return deco


class Loaders(NamedTuple):
    train: DataLoader
    val: DataLoader
    test: DataLoader
    test_shift: DataLoader | None


@dataclass
class DataBundle:
    """Train/val/test datasets of one dataset plus what a model and the loaders need.

    Every item is a dict of tensors with ``labels`` (0-dim long) and either ``pixel_values`` (C, H, W) float or
    ``input_ids``/``attention_mask`` (+ ``token_type_ids``) 1-D long; ``collate_fn`` batches them (text is padded
    on the right). ``test_shift`` is the same examples as ``test`` under a distribution shift, or None.
    ``metadata`` records split sizes and dataset-specific counts (e.g. dropped ARC questions).
    """

    train: Dataset
    val: Dataset
    test: Dataset
    test_shift: Dataset | None
    num_classes: int
    task: Task
    modality: Modality
    collate_fn: Callable[[list[dict[str, torch.Tensor]]], dict[str, torch.Tensor]]
    seed: int = 0
    batch_size: int = 32
    eval_batch_size: int = 128
    num_workers: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)

    def loaders(
        self,
        batch_size: int | None = None,
        eval_batch_size: int | None = None,
        seed: int | None = None,
        num_workers: int | None = None,
    ) -> Loaders:
        """Build DataLoaders: train is shuffled by a ``torch.Generator`` seeded with ``seed`` (default: the split
        seed), so two calls with the same seed give the same batch order; val/test keep file order."""
        bs = self.batch_size if batch_size is None else batch_size
        ebs = self.eval_batch_size if eval_batch_size is None else eval_batch_size
        nw = self.num_workers if num_workers is None else num_workers
        for label, v in (("batch_size", bs), ("eval_batch_size", ebs)):
            if v < 1:
                raise ValueError(f"{label} must be a positive integer, got {v}")
        if nw < 0:
            raise ValueError(f"num_workers must be >= 0, got {nw}")
        gen = torch.Generator().manual_seed(self.seed if seed is None else seed)
        common: dict[str, Any] = dict(
            collate_fn=self.collate_fn,
            num_workers=nw,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=nw > 0,
        )

        def evaluation(ds: Dataset | None) -> DataLoader | None:
            return None if ds is None else DataLoader(ds, batch_size=ebs, shuffle=False, **common)

        train = DataLoader(self.train, batch_size=bs, shuffle=True, generator=gen, **common)
        return Loaders(train, evaluation(self.val), evaluation(self.test), evaluation(self.test_shift))

    def record(self) -> dict[str, Any]:
        """What a run records about its data (``metrics.json["data"]``): classes, task, split sizes, and the rows
        the loader dropped / truncated per file split (``{}`` when none can be), plus the dataset's other metadata."""
        md = dict(self.metadata)
        return {"num_classes": self.num_classes, "task": self.task, **md,
                "dropped": dict(md.get("dropped", {})), "truncated": dict(md.get("truncated", {}))}


def warn_rows(dataset: str, action: str, counts: dict[str, int], totals: dict[str, int], what: str, why: str) -> None:
    """One WARNING line when a loader dropped or truncated rows, e.g. ``arc_easy: dropped 1 of 22 train, 1 of 9 test
    questions (...)``. ``counts`` / ``totals`` map each split to the rows affected / read; nothing is logged when no
    row was affected."""
    parts = [f"{n} of {totals[s]} {s}" for s, n in counts.items() if n]
    if parts:
        log.warning("%s: %s %s %s %s; the counts are in the run's metrics.json (data)", dataset, action, ", ".join(parts), what, why)


def split_indices(
    indices: np.ndarray, labels: np.ndarray | None, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``indices`` into ``(kept, held_out)`` with ``round(fraction * n)`` held out (at least 1, at most n-1).

    Stratified by ``labels`` (aligned with ``indices``) when every class has at least two members and both sides
    can hold every class; otherwise a plain seeded random split. Both outputs are sorted, disjoint and cover
    ``indices``; the same ``seed`` gives the same split.
    """
    indices = np.asarray(indices)
    n = len(indices)
    if n < 2:
        raise ValueError(f"cannot split {n} example(s) into two non-empty parts; provide more data")
    n_held = min(max(int(round(fraction * n)), 1), n - 1)
    stratify = None
    if labels is not None:
        labels = np.asarray(labels)
        _, counts = np.unique(labels, return_counts=True)
        if counts.min() >= 2 and len(counts) <= min(n_held, n - n_held):
            stratify = labels
    kept, held = train_test_split(indices, test_size=n_held, random_state=seed, shuffle=True, stratify=stratify)
    return np.sort(kept), np.sort(held)


def subsample(indices: np.ndarray, max_n: int | None, seed: int) -> np.ndarray:
    """A seeded random subset of at most ``max_n`` of ``indices`` (sorted); all of them when ``max_n`` is None."""
    indices = np.asarray(indices)
    if max_n is None or max_n >= len(indices):
        return indices
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(indices, size=max_n, replace=False))


def check_modality(name: str, info: DatasetInfo, spec: InputSpec) -> None:
    """Raise if the model's input kind does not match the dataset's modality."""
    if spec.kind != info.modality:
        raise ValueError(
            f"dataset {name!r} is {info.modality} data but the model expects {spec.kind} inputs; "
            f"pick {_article(info.modality)} model or {_article(spec.kind)} dataset"
        )


def _article(word: str) -> str:
    """``"an image"``, ``"a text"``."""
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"
