"""A virtual accelerator: GPU device semantics for the tests of a CPU-only machine.

A tensor "on the accelerator" is a :class:`Virtual` wrapper around a real CPU tensor. It reports
``device(type='meta')`` (a device that is not the CPU and that the autograd engine runs without a runtime, unlike
``cuda`` on a machine without a driver), computes real values on the CPU, and is checked like a CUDA tensor:

* an op that mixes it with a CPU tensor of one or more dimensions raises ``Expected all tensors to be on the same
  device`` (0-dim CPU tensors and CPU index tensors are allowed, as on CUDA);
* ``.numpy()`` raises (as for a CUDA tensor); ``.item()``, ``float()``, ``.tolist()`` and ``.cpu()`` copy to the host;
* a factory given ``device=<accelerator>`` with a CPU ``generator`` raises (as ``torch.randn(..., device="cuda",
  generator=cpu_generator)`` does), and so does any draw whose generator is not on the device it draws on
  (``t.normal_(generator=cpu_generator)`` into an accelerator tensor, a CPU draw with the accelerator's generator).

Inside :class:`VirtualAccelerator` (a ``TorchFunctionMode``), ``device="meta"`` / ``.to("meta")`` /
``module.to("meta")`` make such tensors. A tensor made without a device, or left on the CPU by a dropped
``.to(device)``, is a CPU tensor and fails at its first op with an accelerator tensor, or shows its CPU device in the
result, just as it would next to a real GPU. That is what lets the suite kill "device argument dropped" mutants
(tests/MUTATION.md) without a GPU. On a machine with CUDA the ``accelerator`` fixture (tests/conftest.py) gives the
real GPU instead.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode, return_and_correct_aliasing
from torch.utils._pytree import tree_flatten, tree_map

DEVICE = torch.device("meta")
CPU = torch.device("cpu")
# advanced indexing: CUDA takes CPU index tensors (device rules in _check_index)
_INDEX_OPS = {torch.ops.aten.index.Tensor, torch.ops.aten.index_put_.default, torch.ops.aten.index_put.default}
# ops that may mix devices: indexing, and the copies across devices
_MIXED_OK = _INDEX_OPS | {torch.ops.aten.copy_.default, torch.ops.aten._to_copy.default}


def _check_index(func: Any, args: tuple) -> None:
    """ATen's device rules for advanced indexing: a CPU tensor takes CPU indices only; ``index_put`` moves a 0-dim
    value to the indexed tensor's device, any other value must be there already."""
    self, indices = args[0], [i for i in args[1] if isinstance(i, torch.Tensor)]
    if self.device.type == "cpu" and any(i.device.type != "cpu" for i in indices):
        raise RuntimeError("indices should be either on cpu or on the same device as the indexed tensor (cpu)")
    value = args[2] if func is not torch.ops.aten.index.Tensor else None
    if value is not None and value.device.type != self.device.type and value.dim() > 0:
        raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices, "
                           f"{self.device.type} and {value.device.type}! ({func})")


def _is_accel(device: Any) -> bool:
    if isinstance(device, torch.device):
        return device.type == DEVICE.type
    return isinstance(device, str) and device.split(":")[0] == DEVICE.type


def _unwrapped(t: Any) -> Any:
    """The plain tensor under functorch's level wrappers (a constant made inside ``jacrev``/``vmap``)."""
    while isinstance(t, torch.Tensor) and torch._C._functorch.is_functorch_wrapped_tensor(t):
        t = torch._C._functorch.get_unwrapped(t)
    return t


def _host(t: Any) -> Any:
    """The CPU data of a virtual tensor. A bare ``meta`` tensor can only be one the autograd engine made from a
    recorded device (the zero gradient of an unused output): zeros of its shape."""
    if isinstance(t, Virtual):
        return t.inner
    if isinstance(t, torch.Tensor) and t.device.type == DEVICE.type:
        if torch._C._current_autograd_node() is None:
            raise AssertionError(f"virtual device: a dataless meta tensor {tuple(t.shape)} outside the backward pass "
                                 "(made by torch's C++ on the device); teach tests/virtual_device.py this op")
        return torch.zeros(t.shape, dtype=t.dtype)
    return t


class Virtual(torch.Tensor):
    """A CPU tensor ``inner`` presented as a tensor on the accelerator."""

    inner: torch.Tensor

    @staticmethod
    def __new__(cls, inner: torch.Tensor):
        inner = _unwrapped(inner)  # inside jacrev/vmap a new tensor (a constant) comes wrapped for the level
        if inner.device.type != "cpu":
            raise AssertionError(f"a virtual tensor holds CPU data, got {inner.device}")
        out = torch.Tensor._make_wrapper_subclass(
            cls, inner.size(), strides=inner.stride(), storage_offset=inner.storage_offset(), dtype=inner.dtype,
            device=DEVICE, requires_grad=inner.requires_grad, layout=inner.layout,
        )
        out.inner = inner
        return out

    def __repr__(self, **_: Any) -> str:
        return f"Virtual({self.inner!r})"

    def __tensor_flatten__(self):
        return ["inner"], None

    @staticmethod
    def __tensor_unflatten__(inner_tensors, meta, outer_size, outer_stride):
        return Virtual(inner_tensors["inner"])

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat, _ = tree_flatten((args, kwargs))
        if func in _INDEX_OPS:
            _check_index(func, args)
        if func not in _MIXED_OK and any(isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.dim() > 0 for t in flat):
            raise RuntimeError(
                f"Expected all tensors to be on the same device, but found at least two devices, {DEVICE.type} and "
                f"cpu! ({func})"
            )
        device = kwargs.get("device")
        if device is not None and torch.device(device).type == DEVICE.type:
            kwargs = dict(kwargs, device=CPU)
        out = func(*tree_map(_host, args), **tree_map(_host, kwargs))
        if device is not None and torch.device(device).type == "cpu":
            return out
        out = tree_map(lambda t: Virtual(t) if type(t) is torch.Tensor else t, out)
        return return_and_correct_aliasing(func, args, kwargs, out)  # in-place ops, views, squeeze_ ...


class _Upload(torch.autograd.Function):
    """Host -> accelerator copy that keeps the autograd graph (``x.to(device)`` is differentiable)."""

    @staticmethod
    def forward(ctx, t):
        return Virtual(t.detach().as_subclass(torch.Tensor))

    @staticmethod
    def backward(ctx, grad):
        return grad.inner if isinstance(grad, Virtual) else grad


class _Download(torch.autograd.Function):
    """Accelerator -> host copy that keeps the autograd graph (``x.cpu()`` is differentiable)."""

    @staticmethod
    def forward(ctx, t):
        return t.inner.clone()

    @staticmethod
    def backward(ctx, grad):
        return Virtual(grad)


def _is_cpu(device: Any) -> bool:
    return isinstance(device, (torch.device, str)) and torch.device(device).type == "cpu"


def _to_without_device(t: torch.Tensor, args: tuple, kwargs: dict, is_device: Any) -> torch.Tensor:
    """``t.to(*args, **kwargs)`` with the device argument (``is_device``) left out: only a dtype change remains."""
    rest = [a for a in args if not is_device(a)]
    kw = {k: v for k, v in kwargs.items() if k != "device"}
    return t.to(*rest, **kw) if rest or kw else t


def upload(t: Any, fresh: bool = False) -> Any:
    """``t`` on the accelerator (other values unchanged). ``fresh``: ``t`` was made by a factory (no input needed a
    gradient), so a ``requires_grad`` result is a new leaf, as ``torch.tensor(..., device="cuda", requires_grad=True)``."""
    if not isinstance(t, torch.Tensor) or isinstance(t, Virtual):
        return t
    if fresh and t.requires_grad:
        return Virtual(t.detach().as_subclass(torch.Tensor)).requires_grad_(True)
    return _Upload.apply(t) if t.requires_grad else Virtual(t.detach().as_subclass(torch.Tensor))


def _host_index(index: Any) -> Any:
    """An index with Python lists (``t[[2, 0]]``) as CPU index tensors. Torch turns such a list into an index tensor
    on the indexed tensor's device, which here is a meta tensor without data (CUDA copies the values there)."""
    if isinstance(index, tuple):
        return tuple(_host_index(i) for i in index)
    if isinstance(index, list):
        try:
            return torch.tensor(index)
        except (TypeError, ValueError, RuntimeError):  # lists of slices / tensors: left to torch
            return index
    return index


_TorchGenerator = torch.Generator


class _VirtualGenerator(_TorchGenerator):
    """A CPU generator presented as the accelerator's (``torch.Generator(device=<accelerator>)``)."""

    @property
    def device(self) -> torch.device:
        return DEVICE


class _GeneratorType(type(_TorchGenerator)):
    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, _TorchGenerator)

    def __call__(cls, device: Any = None):
        if _is_accel(device):
            return _VirtualGenerator()
        return _TorchGenerator() if device is None else _TorchGenerator(device)


class _Generator(_TorchGenerator, metaclass=_GeneratorType):
    """Stands in for ``torch.Generator`` while the virtual accelerator is active."""


def _check_generator(generator: Any, args: Any, kwargs: dict) -> None:
    """A draw runs on one device, and its generator must be that device's (as on CUDA): the ``device`` asked, else
    the first tensor argument's, else the CPU."""
    tensors = [t for t in tree_flatten(args)[0] if isinstance(t, torch.Tensor)]
    if kwargs.get("device") is not None:
        on_accel = _is_accel(kwargs["device"])
    else:
        on_accel = bool(tensors) and isinstance(tensors[0], Virtual)
    if on_accel != (generator.device.type == DEVICE.type):
        want, got = (DEVICE.type, "cpu") if on_accel else ("cpu", DEVICE.type)
        raise RuntimeError(f"Expected a '{want}' device type for generator but found '{got}'")


class _DeviceFactories(TorchDispatchMode):
    """Tensors that torch's C++ makes on the device from no tensor (``scalar_tensor`` of ``where(c, x, 0)``, the
    ``arange`` of ``one_hot``, the scalars of the fused attention kernel): made on the CPU and wrapped, so
    they hold their values instead of being data-less ``meta`` tensors."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        device = kwargs.get("device")
        if device is not None and torch.device(device).type == DEVICE.type and not any(
                isinstance(t, torch.Tensor) for t in tree_flatten(args)[0]):
            return Virtual(func(*args, **dict(kwargs, device=CPU)))
        return func(*args, **kwargs)


class VirtualAccelerator(TorchFunctionMode):
    """While active, ``device="meta"`` means the virtual accelerator (module docstring); ``torch.Generator`` accepts
    it too."""

    def __enter__(self):
        torch.Generator = _Generator
        self._factories = _DeviceFactories()
        self._factories.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        torch.Generator = _TorchGenerator
        out = super().__exit__(*exc)
        self._factories.__exit__(*exc)
        return out

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__) and isinstance(args[0], Virtual):
            args = (args[0], _host_index(args[1]), *args[2:])
            if func is torch.Tensor.__setitem__ and isinstance(args[2], (bool, int, float)):  # else a data-less meta 0-dim
                args = (*args[:2], torch.tensor(args[2], dtype=args[0].dtype))
        if func is torch.Tensor.tolist and isinstance(args[0], Virtual):
            return args[0].inner.tolist()
        if (func is torch.Tensor.cpu or (func is torch.Tensor.to and (any(map(_is_cpu, args[1:]))
                                         or _is_cpu(kwargs.get("device"))))) \
                and isinstance(args[0], Virtual) and args[0].requires_grad:
            # the autograd engine would send the gradient back with a C++ copy to a dataless meta tensor
            return _to_without_device(_Download.apply(args[0]), args[1:], kwargs, _is_cpu)
        if func in (torch.Tensor.numpy, torch.Tensor.__array__) and isinstance(args[0], Virtual):
            raise TypeError(f"can't convert {DEVICE.type} device type tensor to numpy. Use Tensor.cpu() first.")
        if kwargs.get("generator") is not None:
            _check_generator(kwargs["generator"], args, kwargs)
        positional = func is torch.Tensor.to and any(_is_accel(a) for a in args[1:])
        if not (positional or _is_accel(kwargs.get("device"))):
            return func(*args, **kwargs)
        if func is torch.Tensor.to and isinstance(args[0], Virtual):  # already there: same tensor, maybe a new dtype
            return _to_without_device(args[0], args[1:], kwargs, _is_accel)
        if func is torch.as_tensor and isinstance(args[0], Virtual):  # already there: the same tensor, graph kept
            dtype = kwargs.get("dtype", args[1] if len(args) > 1 else None)
            return args[0] if dtype is None else args[0].to(dtype)
        if positional:
            args = tuple(CPU if _is_accel(a) else a for a in args)
        if "device" in kwargs:
            kwargs = dict(kwargs, device=CPU)
        fresh = not any(isinstance(a, torch.Tensor) and a.requires_grad for a in tree_flatten((args, kwargs))[0])
        return tree_map(lambda t: upload(t, fresh), func(*args, **kwargs))
