"""Default LoRA target modules found by inspecting the network (module names differ across library versions).

transformers 5 names ViT/DeiT attention projections ``q_proj``/``v_proj`` while BERT/RoBERTa keep
``query``/``value``; timm fuses them into ``qkv``; GPT-2 into ``c_attn`` (a ``Conv1D``). Rather than hard-coding one
spelling per family, :func:`attention_targets` picks the first candidate set whose names all exist as leaf names
of projection layers (``nn.Linear`` or transformers' ``Conv1D``).
"""

from __future__ import annotations

from torch import nn

#: Candidate LoRA target sets, most specific first (query+value projections as in Hu et al. 2021).
ATTENTION_CANDIDATES: tuple[tuple[str, ...], ...] = (
    ("q_proj", "v_proj"),
    ("query", "value"),
    ("qkv",),
    ("c_attn",),
    ("query_key_value",),
    ("Wqkv",),
)


def _is_projection(m: nn.Module) -> bool:
    return isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D"


def projection_leaf_names(model: nn.Module) -> set[str]:
    """Leaf names (last path component) of every ``nn.Linear`` / ``Conv1D`` module."""
    return {name.rpartition(".")[2] for name, m in model.named_modules() if name and _is_projection(m)}


def attention_targets(model: nn.Module) -> list[str]:
    """The attention projections to adapt: the first of :data:`ATTENTION_CANDIDATES` fully present in ``model``."""
    leaves = projection_leaf_names(model)
    for cand in ATTENTION_CANDIDATES:
        if all(c in leaves for c in cand):
            return list(cand)
    raise ValueError(
        f"could not find attention projections in {type(model).__name__} (looked for {ATTENTION_CANDIDATES}); "
        f"set adapter.target_modules explicitly, e.g. from these layer names: {sorted(leaves)[:20]}"
    )


def conv_targets(model: nn.Module, exclude: tuple[str, ...] = ()) -> list[str]:
    """Full names of every ``nn.Conv2d`` (CIFAR CNNs: LoRA on all convolutions), minus ``exclude`` prefixes."""
    return [
        n for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and not any(n == e or n.startswith(e + ".") for e in exclude)
    ]
