"""Adapters built with Hugging Face PEFT: which parameters of a backbone are tuned, accounting, save/load.

``apply_adapter(model, AdapterConfig(method=...))`` for ``lora``, ``normtune``, ``hybrid``, ``full``, ``linear``
(see :mod:`bayespeft.adapters.methods`); ``parameter_report``; ``save_adapter`` / ``load_adapter`` in PEFT's own
format (:mod:`bayespeft.adapters.checkpoint`); ``trainable_state_dict`` / ``load_trainable_state_dict`` for trainer
checkpoints; ``adapter_layers`` groups trainable parameters by transformer block. PEFT is imported only when a PEFT
method is applied or loaded.
"""

from .checkpoint import (
    base_fingerprint,
    load_adapter,
    load_trainable_state_dict,
    read_meta,
    save_adapter,
    trainable_state_dict,
)
from .config import METHOD_OPTIONS, AdapterConfig
from .methods import ADAPTERS, AdapterMethod, apply_adapter, register_adapter
from .modules import is_norm, norm_module_names
from .report import adapter_layers, head_parameter_names, parameter_report

__all__ = [
    "ADAPTERS",
    "AdapterConfig",
    "AdapterMethod",
    "METHOD_OPTIONS",
    "adapter_layers",
    "apply_adapter",
    "base_fingerprint",
    "head_parameter_names",
    "is_norm",
    "load_adapter",
    "load_trainable_state_dict",
    "norm_module_names",
    "parameter_report",
    "read_meta",
    "register_adapter",
    "save_adapter",
    "trainable_state_dict",
]
