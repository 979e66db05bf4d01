"""The quickstart's upstream pretraining (weights source ``quickstart-upstream``), cached on first use.

A ``micro_vit`` (any size given by the model config) is trained from scratch, all parameters, on the images of the
digits 0..4 in the training split of scikit-learn's digits (the same split as every digits run: ``data`` defaults,
no augmentation), for :data:`UPSTREAM_EPOCHS` epochs of AdamW (lr 3e-3, weight decay 0.05, 10 % warmup, clipping 1.0,
seed 1234), standing in for an ImageNet-pretrained backbone. Training is seeded, deterministic on CPU and run with one
torch thread whatever the caller's setting (:func:`one_thread`: the float sums of several threads come in another
order, and a full fine-tuning of 30 epochs turns those last-digit differences into another backbone), so the file is
the same on every machine and from every command (the quickstart, a digits config, a sweep); it is written once to
``$BAYESPEFT_CACHE/quickstart/micro_vit_upstream_<hash>.safetensors`` (default ``~/.cache/bayespeft``), the hash
covering everything that changes the weights, and loaded from there afterwards. Making it leaves the global random
state (python, numpy, torch) as it found it, so a run that builds its model right after seeding gets the same
initialisation whether the cache was cold or warm.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
from collections.abc import Iterator
from pathlib import Path

UPSTREAM_CLASSES = 5
UPSTREAM_EPOCHS = 30


def cache_dir() -> Path:
    """``$BAYESPEFT_CACHE`` or ``~/.cache/bayespeft``."""
    return Path(os.environ.get("BAYESPEFT_CACHE", Path.home() / ".cache" / "bayespeft"))


def pretrain_upstream(model_cfg, epochs: int = UPSTREAM_EPOCHS) -> Path:
    """Path of the cached upstream weights of the micro ViT ``model_cfg`` (a :class:`ModelConfig`); trains it first
    when the cache lacks it. Returns a ``.safetensors`` state dict of the backbone (10-class head shapes differ and
    are skipped on load)."""
    from ..data import DataConfig
    from ..train import TrainConfig
    from .registry import MODELS

    if MODELS.get(model_cfg.name).family != "micro_vit":
        raise ValueError(
            f"model.pretrained: quickstart-upstream is the quickstart's digits pretraining of a micro_vit; model.name is "
            f"{model_cfg.name!r}: use model.pretrained: true/false or model.path for it"
        )
    up_model = model_cfg.model_copy(update={"pretrained": False, "path": None})
    up_train = TrainConfig(epochs=epochs, lr=3e-3, weight_decay=0.05, warmup_ratio=0.1, grad_clip=1.0, seed=1234,
                           patience=epochs)
    up_data = DataConfig(name="digits", augment=False)
    recipe = "|".join([up_model.model_dump_json(), up_train.model_dump_json(exclude={"progress"}),
                       up_data.model_dump_json(), str(UPSTREAM_CLASSES), "loaders 64/256", "1 thread"])
    key = hashlib.sha256(recipe.encode()).hexdigest()[:16]
    path = cache_dir() / "quickstart" / f"micro_vit_upstream_{key}.safetensors"
    if path.is_file():
        return path
    with preserved_rng(), one_thread():
        _train_upstream(up_model, up_train, up_data, path, key)
    return path


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(1)`` and restore the caller's thread count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run the block and restore the python, numpy and torch (CPU and CUDA) random states it started with."""
    import numpy as np
    import torch

    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_available() else []):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


def _train_upstream(up_model, up_train, up_data, path: Path, key: str) -> None:
    import torch
    from torch.utils.data import DataLoader, Subset

    from .. import io
    from ..adapters import AdapterConfig, apply_adapter
    from ..data import build_data
    from ..seed import seed_everything
    from ..train import fit
    from .build import build_model

    seed_everything(up_train.seed)
    model = apply_adapter(build_model(up_model, UPSTREAM_CLASSES), AdapterConfig(method="full"))
    data = build_data(up_data, model.input_spec)

    def upstream_subset(ds):
        keep = torch.nonzero(torch.as_tensor(ds.targets) < UPSTREAM_CLASSES).flatten().tolist()
        return Subset(ds, keep)

    g = torch.Generator().manual_seed(up_train.seed)
    train = DataLoader(upstream_subset(data.train), batch_size=64, shuffle=True, generator=g, collate_fn=data.collate_fn)
    val = DataLoader(upstream_subset(data.val), batch_size=256, collate_fn=data.collate_fn)
    work = path.parent / f"upstream_{key}_run"
    print(f"pretraining the upstream micro ViT on digits 0-{UPSTREAM_CLASSES - 1} (once; cached in {path}) ...", flush=True)
    fit(model, train, val, up_train, work)
    io.save_tensors(path, model.base_network.state_dict())
