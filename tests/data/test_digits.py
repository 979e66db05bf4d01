"""scikit-learn digits: splits, normalisation, resizing, augmentation and shifted test set against direct answers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from bayespeft.data import DataConfig, build_data
from bayespeft.inputs import InputSpec

NATIVE = InputSpec(kind="image", image_size=8, in_chans=1, mean=(0.3,), std=(0.4,))
RAW = InputSpec(kind="image", image_size=8, in_chans=1)  # no normalisation: pixel_values in [0, 1]


@pytest.fixture(scope="module")
def sk():
    d = load_digits()
    return torch.tensor(d.images, dtype=torch.float32) / 16.0, torch.tensor(d.target)


def _stack(ds):
    return torch.stack([ds[i]["pixel_values"] for i in range(len(ds))])


def test_split_sizes_disjoint_stratified_and_seeded():
    b = build_data(DataConfig(name="digits", split_seed=0), NATIVE)
    tr, va, te = (set(ds.indices.tolist()) for ds in (b.train, b.val, b.test))
    assert not (tr & va or tr & te or va & te)
    assert len(tr | va | te) == 1797
    assert (len(te), len(va), len(tr)) == (359, 144, 1294)  # round(.2*1797), round(.1*1438)
    counts = torch.bincount(b.test.targets, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38  # stratified: ~10% of 359 per class
    same = build_data(DataConfig(name="digits", split_seed=0), NATIVE)
    other = build_data(DataConfig(name="digits", split_seed=1), NATIVE)
    assert torch.equal(same.test.indices, b.test.indices) and torch.equal(same.val.indices, b.val.indices)
    assert not torch.equal(other.test.indices, b.test.indices)
    assert b.num_classes == 10 and b.task == "image_classification" and b.test_shift is None


def test_eval_items_are_normalised_sklearn_pixels(sk):
    images, target = sk
    b = build_data(DataConfig(name="digits"), NATIVE)
    for ds in (b.val, b.test):
        idx = ds.indices
        expected = (images[idx].unsqueeze(1) - 0.3) / 0.4
        assert torch.allclose(_stack(ds), expected, atol=1e-6)
        assert torch.equal(ds.targets, target[idx])
        item = ds[0]
        assert item["labels"].dtype == torch.long and item["labels"].dim() == 0


def test_resize_and_channel_repeat_for_a_224_rgb_backbone(sk):
    images, _ = sk
    spec = InputSpec(kind="image", image_size=32, in_chans=3, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    b = build_data(DataConfig(name="digits", max_test=5), spec)
    x = _stack(b.test)
    assert x.shape == (5, 3, 32, 32)
    up = F.interpolate(images[b.test.indices].unsqueeze(1), size=(32, 32), mode="bilinear", align_corners=False)
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    assert torch.allclose(x, (up - mean) / std, atol=1e-5)


def test_augmentation_only_on_train_and_is_a_one_pixel_shift(sk):
    images, _ = sk
    b = build_data(DataConfig(name="digits", augment=True), RAW)
    torch.manual_seed(0)
    val_a, val_b = b.val[3]["pixel_values"], b.val[3]["pixel_values"]
    assert torch.equal(val_a, val_b)
    clean = images[int(b.train.indices[0])]
    padded = F.pad(clean, (1, 1, 1, 1))
    shifts = [padded[dy : dy + 8, dx : dx + 8] for dy in range(3) for dx in range(3)]
    seen = set()
    for _ in range(40):
        x = b.train[0]["pixel_values"][0]
        matches = [k for k, s in enumerate(shifts) if torch.equal(x, s)]
        assert matches, "augmented digit is not a <=1 pixel translation of the clean digit"
        seen.add(matches[0])
    assert len(seen) > 1  # random
    plain = build_data(DataConfig(name="digits", augment=False), RAW)
    assert torch.equal(plain.train[0]["pixel_values"][0], clean)


def test_rotate_shift_keeps_examples_and_labels(sk):
    b = build_data(DataConfig(name="digits", shift="rotate", shift_severity=90), RAW)
    assert b.test_shift is not None and len(b.test_shift) == len(b.test)
    assert torch.equal(b.test_shift.targets, b.test.targets)
    clean, shifted = _stack(b.test), _stack(b.test_shift)
    # torchvision rotates counter-clockwise for positive angles: a 90 degree turn is an exact rot90
    assert torch.allclose(shifted, torch.rot90(clean, k=1, dims=(-2, -1)), atol=1e-5)
    b30 = build_data(DataConfig(name="digits", shift="rotate"), RAW)
    assert b30.metadata["shift_severity"] == 30.0
    assert (_stack(b30.test_shift) - clean).abs().mean() > 0.05


def test_noise_shift_is_seeded_clipped_and_has_the_requested_std():
    cfg = DataConfig(name="digits", shift="noise", shift_severity=0.05)
    b, again = build_data(cfg, RAW), build_data(cfg, RAW)
    clean, shifted = _stack(b.test), _stack(b.test_shift)
    assert torch.equal(shifted, _stack(again.test_shift))  # deterministic
    assert torch.equal(b.test_shift.targets, b.test.targets)
    assert shifted.min() >= 0 and shifted.max() <= 1
    inner = (clean > 0.3) & (clean < 0.7)  # far from the clip bounds
    resid = (shifted - clean)[inner]
    assert resid.numel() > 2000
    assert abs(resid.std().item() - 0.05) < 0.005 and abs(resid.mean().item()) < 0.005
    other = build_data(DataConfig(name="digits", shift="noise", shift_severity=0.05, split_seed=3), RAW)
    assert not torch.equal(_stack(other.test_shift)[:5], _stack(other.test)[:5])


def test_subsampling_is_seeded_and_inside_the_split():
    full = build_data(DataConfig(name="digits"), NATIVE)
    a = build_data(DataConfig(name="digits", max_train=50, max_val=10, max_test=20), NATIVE)
    b = build_data(DataConfig(name="digits", max_train=50, max_val=10, max_test=20), NATIVE)
    assert (len(a.train), len(a.val), len(a.test)) == (50, 10, 20)
    assert torch.equal(a.train.indices, b.train.indices)
    assert set(a.train.indices.tolist()) <= set(full.train.indices.tolist())
    assert set(a.test.indices.tolist()) <= set(full.test.indices.tolist())


def test_loaders_batch_and_seeded_order():
    b = build_data(DataConfig(name="digits", max_train=64, batch_size=16), NATIVE)
    loaders = b.loaders()
    batch = next(iter(loaders.train))
    assert batch["pixel_values"].shape == (16, 1, 8, 8) and batch["labels"].shape == (16,)
    order = lambda seed: torch.cat([x["labels"] for x in b.loaders(seed=seed).train])  # noqa: E731
    torch.manual_seed(0)
    first = order(5)
    torch.manual_seed(123)  # the global RNG does not decide the order
    assert torch.equal(first, order(5))
    assert not torch.equal(first, order(6))
    assert len(loaders.test.dataset) == len(b.test) and loaders.test_shift is None
    assert next(iter(b.loaders(eval_batch_size=7).val))["labels"].shape == (7,)


def test_text_model_on_image_data_is_rejected():
    with pytest.raises(ValueError, match="image data but the model expects text inputs; pick an image model or a text dataset"):
        build_data(DataConfig(name="digits"), InputSpec(kind="text"))
    with pytest.raises(ValueError, match="mean/std must both have 1 or in_chans=3"):
        build_data(DataConfig(name="digits"), InputSpec(kind="image", image_size=8, in_chans=3, mean=(0.1, 0.2), std=(1.0, 1.0)))


def test_datasets_and_collate_pickle_for_worker_processes():
    """spawn-based DataLoader workers (macOS, Windows) pickle the dataset and collate_fn."""
    import pickle

    b = build_data(DataConfig(name="digits", shift="noise", max_test=4), NATIVE)
    for ds in (b.train, b.test_shift):
        clone = pickle.loads(pickle.dumps(ds))
        assert torch.equal(clone[1]["labels"], ds[1]["labels"])
    assert torch.equal(pickle.loads(pickle.dumps(b.test_shift))[2]["pixel_values"], b.test_shift[2]["pixel_values"])
    assert pickle.loads(pickle.dumps(b.collate_fn)).pad_token_id is None
    batch = next(iter(b.loaders(num_workers=1, batch_size=8).train))
    assert batch["pixel_values"].shape == (8, 1, 8, 8)
