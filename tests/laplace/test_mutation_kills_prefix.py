"""``laplace.prefix``: units of several stacks (stages) and the largest-output size record (tests/MUTATION.md,
fourth pass). Sizes are counted by hand: ``numel · element_size`` of each module's output."""

from __future__ import annotations

import torch
from torch import nn

from bayespeft.batch import forward_batch
from bayespeft.laplace.prefix import PrefixCache, units_of

F64 = torch.float64


def _block():
    return nn.Sequential(nn.Linear(4, 4), nn.Tanh())


class Staged(nn.Module):
    """Two stages of blocks (like a CIFAR ResNet's ``layer1``, ``layer2``), then a head."""

    def __init__(self):
        super().__init__()
        self.stage1 = nn.Sequential(_block(), _block())
        self.stage2 = nn.Sequential(_block())
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.stage2(self.stage1(x)))


def test_several_stacks_are_units_named_with_the_wrapper_prefix():
    net = Staged()
    assert units_of(net) == [("stage1", net.stage1), ("stage2", net.stage2)]

    class Wrapped(nn.Module):  # a TaskModel's shape: the network under backbone., named by backbone_prefix
        def __init__(self):
            super().__init__()
            self.backbone = net
            self.backbone_prefix, self.base_network = "backbone.", net

    assert units_of(Wrapped()) == [("backbone.stage1", net.stage1), ("backbone.stage2", net.stage2)]
    torch.manual_seed(0)
    cache = PrefixCache(net.double(), forward_batch)
    k, path = cache.entry(["head.weight"], (torch.randn(5, 4, dtype=F64), torch.zeros(5, dtype=torch.long)))
    assert (k, path) == (2, "cached-prefix (units 0..1 of 2 replayed, the rest run per sample)")


class TupleOut(nn.Module):
    def forward(self, x):
        return None, x.repeat(1, 10)  # the first tensor of a tuple output is the one measured


class NoTensors(nn.Module):
    def forward(self, x):
        return "tag", 3


class Flat(nn.Module):
    """No block stack: the naive path, which still records the largest module output."""

    def __init__(self):
        super().__init__()
        self.wide, self.meta, self.head = TupleOut(), NoTensors(), nn.Linear(4, 3)

    def forward(self, x):
        self.wide(x)
        self.meta(x)
        return self.head(x)


def test_largest_module_output_in_bytes_of_the_detection_forward():
    model = Flat().double()
    cache = PrefixCache(model, forward_batch)
    assert cache.max_output_bytes == 0  # nothing measured yet
    batch = (torch.randn(7, 4, dtype=F64), torch.zeros(7, dtype=torch.long))
    assert cache.entry(["head.weight"], batch) == (None, "naive (no block stack found)")
    assert cache.max_output_bytes == 7 * 40 * 8  # TupleOut's (7, 40) float64; the logits are (7, 3)
    untouched = PrefixCache(model, lambda m, b: (b[0], b[1]))  # a forward that calls no module
    untouched.entry(["head.weight"], batch)
    assert untouched.max_output_bytes == 0
