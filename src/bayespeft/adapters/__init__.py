"""Adapters built with Hugging Face PEFT: which parameters of a backbone are tuned, accounting, save/load.

``apply_adapter(model, AdapterConfig(method=...))`` for ``lora``, ``normtune``, ``hybrid``, ``full``, ``linear``
(see :mod:`bayespeft.adapters.methods`); ``parameter_report``; ``save_adapter`` / ``load_adapter`` in PEFT's own
format (:mod:`bayespeft.adapters.checkpoint`); ``trainable_state_dict`` / ``load_trainable_state_dict`` for trainer
checkpoints; ``adapter_layers`` groups trainable parameters by transformer block. torch is imported on first use of
something that needs it, PEFT only when a PEFT method is applied or loaded.
"""

from ..lazy import attach

# public name -> defining submodule, imported on first access (PEP 562): `import bayespeft.adapters` loads no torch
__getattr__, __dir__, __all__ = attach(__name__, {
    "checkpoint": ["base_fingerprint", "load_adapter", "load_trainable_state_dict", "read_meta", "save_adapter",
                   "trainable_state_dict"],
    "config": ["METHOD_OPTIONS", "AdapterConfig"],
    "methods": ["ADAPTERS", "AdapterMethod", "apply_adapter", "register_adapter"],
    "modules": ["is_norm", "norm_module_names"],
    "report": ["adapter_layers", "head_parameter_names", "parameter_report"],
})
