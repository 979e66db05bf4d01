"""The virtual accelerator (tests/virtual_device.py) computes the CPU's values and fails where a GPU would."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


def _forward_backward_jacobian(net, x):
    out = net(x)
    out.square().sum().backward()
    params = {k: v.detach() for k, v in net.named_parameters()}
    jac = vmap(jacrev(lambda p, xi: functional_call(net, p, (xi,))), in_dims=(None, 0))(params, x)
    return [out.detach(), *(p.grad for p in net.parameters()), *jac.values()]


def test_values_equal_the_cpu_and_results_stay_on_the_device(accelerator):
    x = torch.randn(5, 3, dtype=torch.float64)
    want = _forward_backward_jacobian(_net(), x)
    net = _net().to(accelerator)
    assert all(isinstance(p, nn.Parameter) and p.device == accelerator for p in net.parameters())
    got = _forward_backward_jacobian(net, x.to(accelerator))
    assert [t.device for t in got] == [accelerator] * len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.cpu(), w, rtol=0, atol=0)
    torch.optim.SGD(net.parameters(), lr=0.5).step()
    assert net[0].weight.device == accelerator
    torch.testing.assert_close(net[0].weight.cpu(), _net()[0].weight - 0.5 * want[1], rtol=0, atol=0)


def test_a_cpu_tensor_next_to_an_accelerator_tensor_fails(accelerator):
    a = torch.arange(3.0, device=accelerator)
    with pytest.raises(RuntimeError, match="same device"):
        a + torch.ones(3)                                   # made without a device: the CPU
    with pytest.raises(RuntimeError, match="same device"):
        torch.ones(2, 3) @ a
    with pytest.raises(RuntimeError, match="same device"):
        a.to(None) * a.cpu()                                 # a dropped .to(device) leaves it on the CPU
    assert (a * torch.tensor(2.0)).cpu().tolist() == [0.0, 2.0, 4.0]           # 0-dim CPU scalars mix, as on CUDA
    assert a[torch.tensor([2, 0])].cpu().tolist() == [2.0, 0.0]                  # CPU index tensors too
    assert (a + torch.zeros(3, device=accelerator)).device == accelerator


def test_host_conversions_behave_as_for_a_gpu_tensor(accelerator):
    a = torch.tensor([1.5, 2.5], device=accelerator)
    with pytest.raises(TypeError, match="numpy"):
        a.numpy()
    assert a.cpu().numpy().tolist() == [1.5, 2.5]
    assert a.tolist() == [1.5, 2.5] and a[1].item() == 2.5 and float(a.sum()) == 4.0
    assert a.to("cpu").device.type == "cpu" and a.to(torch.float64).device == accelerator


def test_generators_must_live_on_the_device_they_draw_for(accelerator):
    with pytest.raises(RuntimeError, match="generator"):
        torch.randn(3, device=accelerator, generator=torch.Generator().manual_seed(0))
    g = torch.Generator(device=accelerator)
    assert g.device == accelerator and isinstance(g, torch.Generator) and isinstance(torch.Generator(), torch.Generator)
    draw = torch.randn(3, device=accelerator, generator=g.manual_seed(7))
    assert draw.device == accelerator
    torch.testing.assert_close(draw.cpu(), torch.randn(3, generator=torch.Generator().manual_seed(7)))


def test_in_place_views_keep_the_shape(accelerator):
    a = torch.zeros(3, device=accelerator)
    a.unsqueeze_(0)
    assert a.shape == (1, 3) and a.cpu().shape == (1, 3)
    w = torch.randn(2, 3, dtype=torch.float64)
    v = torch.randn(3, dtype=torch.float64)
    torch.testing.assert_close((w.to(accelerator) @ v.to(accelerator)).cpu(), w @ v)   # matmul squeezes in place


def test_copies_to_the_device_keep_the_graph(accelerator):
    a = torch.tensor([1.0, -2.0], requires_grad=True)
    (a.to(accelerator) * torch.tensor([3.0, 4.0], device=accelerator)).sum().backward()
    assert a.grad.device.type == "cpu" and a.grad.tolist() == [3.0, 4.0]


def test_a_factory_with_requires_grad_makes_a_leaf_an_optimiser_can_step(accelerator):
    x = torch.tensor([1.0, -2.0], dtype=torch.float64, device=accelerator, requires_grad=True)
    assert x.is_leaf and x.requires_grad and x.device == accelerator
    opt = torch.optim.SGD([x], lr=0.5)                      # refuses a non-leaf tensor
    (x * torch.tensor([3.0, 4.0], dtype=torch.float64, device=accelerator)).sum().backward()
    opt.step()
    assert x.grad.device == accelerator and x.grad.tolist() == [3.0, 4.0] and x.tolist() == [-0.5, -4.0]


def test_python_list_indices_select_the_listed_entries(accelerator):
    m = torch.arange(9.0, device=accelerator).reshape(3, 3)
    assert m[[2, 0]].cpu().tolist() == [[6.0, 7.0, 8.0], [0.0, 1.0, 2.0]] and m[[2, 0]].device == accelerator
    assert m[[0, 2], [1, 0]].cpu().tolist() == [1.0, 6.0] and m[:, [2]].cpu().tolist() == [[2.0], [5.0], [8.0]]
    assert m[0][[True, False, True]].cpu().tolist() == [0.0, 2.0]
    v = torch.zeros(3, device=accelerator)
    v[[2]] = 5.0
    v[torch.tensor([0])] = 2
    v[1:2] = 3.0
    assert v.cpu().tolist() == [2.0, 3.0, 5.0]


def test_as_tensor_of_a_tensor_already_there_keeps_its_graph(accelerator):
    x = torch.tensor(0.5, dtype=torch.float64, device=accelerator, requires_grad=True)
    same = torch.as_tensor(x.exp(), dtype=torch.float64, device=accelerator)
    wider = torch.as_tensor(x.to(torch.float32) * 2, dtype=torch.float64, device=accelerator)
    (same * 3 + wider).backward()
    assert same.device == wider.device == accelerator and wider.dtype == torch.float64
    assert x.grad.item() == pytest.approx(3 * torch.tensor(0.5).exp().item() + 2)


def test_indexing_follows_the_device_rules_of_aten(accelerator):
    a, idx = torch.arange(4.0, device=accelerator), torch.tensor([3, 1], device=accelerator)
    host = torch.zeros(4)
    with pytest.raises(RuntimeError, match="indices should be either on cpu"):
        host[idx]                                            # a CPU tensor indexed on the device
    with pytest.raises(RuntimeError, match="indices should be either on cpu"):
        host[idx] = a[:2]
    with pytest.raises(RuntimeError, match="same device"):
        a[idx] = torch.ones(2)                               # a CPU value of one or more dims
    a[idx] = torch.tensor(7.0)                               # a 0-dim CPU value is moved
    a[torch.tensor([0])] = torch.tensor([5.0], device=accelerator)
    assert a.cpu().tolist() == [5.0, 7.0, 2.0, 7.0] and a[idx.cpu()].cpu().tolist() == [7.0, 7.0]


def test_the_generator_type_is_restored_afterwards():
    from virtual_device import VirtualAccelerator

    before = torch.Generator
    with VirtualAccelerator():
        assert torch.Generator is not before
    assert torch.Generator is before
