"""The virtual accelerator (tests/virtual_device.py) computes the CPU's values and fails where a GPU would."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap


_BARE = torch.empty(3, device="meta")  # made outside the virtual accelerator: a real meta tensor, no data


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
    with pytest.raises(RuntimeError, match="indices should be either on cpu or on the same device"):
        torch.ones(4)[torch.tensor([2, 0], device=accelerator)]                   # but not a CPU tensor's device index
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


def test_a_draw_needs_the_generator_of_its_own_device(accelerator):
    on_device, cpu_gen = torch.zeros(3, device=accelerator), torch.Generator().manual_seed(0)
    with pytest.raises(RuntimeError, match="generator"):
        on_device.normal_(generator=cpu_gen)                              # in place, into an accelerator tensor
    device_gen = torch.Generator(device=accelerator)
    with pytest.raises(RuntimeError, match="generator"):
        torch.zeros(3).normal_(generator=device_gen)                       # a CPU tensor, the device's generator
    with pytest.raises(RuntimeError, match="generator"):
        torch.randn(3, generator=device_gen)                               # a CPU draw (no device given)
    on_device.normal_(generator=device_gen.manual_seed(5))
    assert on_device.device == accelerator
    want = torch.zeros(3).normal_(generator=torch.Generator().manual_seed(5))
    if accelerator.type != "cuda":  # a CUDA generator has its own stream
        torch.testing.assert_close(on_device.cpu(), want, rtol=0, atol=0)


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


def test_one_hot_of_device_labels_is_the_cpus(accelerator):
    y = torch.tensor([2, 0, 1, 2, 1])
    got = torch.nn.functional.one_hot(y.to(accelerator), 3)
    assert got.device == accelerator and got.dtype == torch.long
    assert torch.equal(got.cpu(), torch.nn.functional.one_hot(y, 3))


def test_constants_made_on_the_device_inside_jacrev(accelerator):
    """Index tensors made inside a transform (e.g. ``arange`` for the last-token logits) work as on a GPU."""
    w = torch.randn(3, 4, dtype=torch.float64)

    def f(w):
        rows = torch.arange(3, device=w.device)
        return w[rows, (rows + 1) % 4] * torch.tensor([1.0, 2.0, 3.0], dtype=w.dtype, device=w.device)

    got = jacrev(f)(w.to(accelerator))
    assert got.device == accelerator
    torch.testing.assert_close(got.cpu(), jacrev(f)(w), rtol=0, atol=0)


def test_copies_to_the_host_keep_the_graph(accelerator):
    a = torch.tensor([1.0, -2.0], requires_grad=True)
    d = a.to(accelerator) * torch.tensor([3.0, 4.0], device=accelerator)
    (d.cpu().sum() + d.to("cpu", torch.float64).sum() + d.sum().to(device="cpu")).backward()
    assert a.grad.device.type == "cpu" and a.grad.tolist() == [9.0, 12.0]


def test_list_indices_select_as_on_the_cpu(accelerator):
    a = torch.arange(12.0).reshape(3, 4)
    d = a.to(accelerator)
    for key in ([2, 0, 2], (slice(None), [3, 1]), ([0, 2], [1, 3]), [True, False, True]):
        got = d[key]
        assert got.device == accelerator
        assert torch.equal(got.cpu(), a[key]), key
    d[[0, 2]] = torch.zeros(2, 4, device=accelerator)
    a[[0, 2]] = 0.0
    assert torch.equal(d.cpu(), a)


def test_a_dataless_device_tensor_in_the_forward_pass_is_an_error(accelerator):
    """Torch's C++ may make tensors on the device itself (no data); outside backward's zero gradients that would
    read as zeros, so it fails loudly instead (one_hot and list indices are handled above)."""
    a = torch.ones(3, device=accelerator)
    with pytest.raises(AssertionError, match="dataless meta tensor"):
        a + _BARE


@pytest.mark.parametrize("kw", [{}, {"is_causal": True}, {"mask": "bool"}, {"mask": "float", "scale": 0.3}])
def test_scaled_dot_product_attention_and_its_gradient_as_on_the_cpu(accelerator, kw):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    kw = dict(kw)
    mask = {"bool": torch.rand(5, 5, generator=g) > 0.3, "float": torch.randn(5, 5, generator=g, dtype=torch.float64)}
    if "mask" in kw:
        kw["attn_mask"] = mask[kw.pop("mask")]
        kw["attn_mask"][:, 0] = True if kw["attn_mask"].dtype == torch.bool else kw["attn_mask"][:, 0]
    F = torch.nn.functional.scaled_dot_product_attention
    want = F(q, k, v, **kw)
    (wq,) = torch.autograd.grad(want.square().sum(), q)
    on = {k_: (t.to(accelerator) if torch.is_tensor(t) else t) for k_, t in kw.items()}
    got = F(q.to(accelerator), k.to(accelerator), v.to(accelerator), **on)
    (gq,) = torch.autograd.grad(got.square().sum(), q)
    assert got.device == accelerator
    torch.testing.assert_close(got.cpu(), want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gq, wq, rtol=1e-10, atol=1e-12)


def test_scalars_torch_makes_on_the_device_keep_their_values(accelerator):
    """``where(c, x, 0)`` makes its ``0`` with ``scalar_tensor`` on the device, and so does the cross-entropy that
    ``vmap`` decomposes into it (the vectorised SG-MCMC chains)."""
    x = torch.tensor([-1.0, 2.0, 3.0])
    assert torch.where(x.to(accelerator) > 0, x.to(accelerator), 7).cpu().tolist() == [7.0, 2.0, 3.0]
    logits, y = torch.randn(4, 5, 3, dtype=torch.float64), torch.randint(0, 3, (4, 5))
    want = vmap(torch.nn.functional.cross_entropy)(logits, y)
    got = vmap(torch.nn.functional.cross_entropy)(logits.to(accelerator), y.to(accelerator))
    assert got.device == accelerator
    torch.testing.assert_close(got.cpu(), want)


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
