"""transformers text backbones: sequence classifiers and causal-LM multiple choice.

Sequence classification (``roberta-base``, ``bert-base-uncased``, generic ``hf_text``):
``AutoModelForSequenceClassification`` with ``num_labels = num_classes``; a checkpoint of a bare encoder (e.g.
all-MiniLM-L6-v2, a ``BertModel``) gets a freshly initialised ``classifier``. From config: ``RobertaConfig`` /
``BertConfig`` (or ``overrides.model_type``) with ``overrides``; ``vocab_size`` defaults to ``len(tokenizer)``.

Causal LM (``hf_causal_lm``, ``phi-2``): ``AutoModelForCausalLM``; scored by :class:`~bayespeft.models.task.ChoiceLM`
on the tokens ``" A"``, ``" B"``, ... (first ``num_classes`` letters), each of which must be a single token.
"""

from __future__ import annotations

import string
from typing import Any

from ..inputs import InputSpec
from .config import ModelConfig
from .hf_common import config_from, from_pretrained, head_child, load_tokenizer
from .registry import MODELS, register_model
from .targets import attention_targets
from .task import ChoiceLM, SequenceClassifier


def _fixed_for_tokenizer(cfg: ModelConfig, tokenizer: Any, **fixed: Any) -> dict[str, Any]:
    if "vocab_size" not in cfg.overrides:
        fixed["vocab_size"] = len(tokenizer)
    fixed["pad_token_id"] = tokenizer.pad_token_id
    return fixed


def _check_vocab(model: Any, tokenizer: Any, name: str) -> None:
    vocab = int(model.get_input_embeddings().num_embeddings)
    if len(tokenizer) > vocab:
        raise ValueError(
            f"{name}: the tokenizer has {len(tokenizer)} tokens but the model's embedding has only {vocab} rows; "
            "use the tokenizer that belongs to the model (or raise overrides.vocab_size)"
        )


def _seq_cls_builder(config_cls_name: str | None):
    def build(cfg: ModelConfig, num_classes: int, pretrained: bool, tokenizer: Any = None) -> SequenceClassifier:
        import transformers

        entry = MODELS.get(cfg.name)
        tok = load_tokenizer(cfg, entry, tokenizer)
        if pretrained:
            model = from_pretrained(
                transformers.AutoModelForSequenceClassification, cfg, entry, ("classifier", "score"), num_labels=num_classes
            )
            if model.config.pad_token_id is None:
                model.config.pad_token_id = tok.pad_token_id
        else:
            default = getattr(transformers, config_cls_name) if config_cls_name else None
            conf = config_from(cfg, default, **_fixed_for_tokenizer(cfg, tok, num_labels=num_classes))
            model = transformers.AutoModelForSequenceClassification.from_config(conf)
        _check_vocab(model, tok, cfg.name)
        return SequenceClassifier(
            model, name=cfg.name, family="hf_text", num_classes=num_classes,
            input_spec=InputSpec(kind="text", tokenizer=tok, max_length=cfg.max_length),
            head_modules=[head_child(model)], default_targets=attention_targets(model),
        )

    return build


register_model("roberta-base", "hf_text", True, hub_id="roberta-base", description="RoBERTa-base sequence classifier")(
    _seq_cls_builder("RobertaConfig")
)
register_model(
    "bert-base-uncased", "hf_text", True, hub_id="bert-base-uncased", description="BERT-base (uncased) sequence classifier"
)(_seq_cls_builder("BertConfig"))
register_model("hf_text", "hf_text", True, description="any transformers encoder directory (model.path) as a sequence classifier")(
    _seq_cls_builder(None)
)


def letter_token_ids(tokenizer: Any, num_classes: int) -> tuple[list[str], list[int]]:
    """Token ids of ``" A"``, ``" B"``, ... (first ``num_classes`` letters), each required to be one token."""
    if not 2 <= num_classes <= 26:
        raise ValueError(f"multiple choice needs between 2 and 26 answer letters, got num_classes={num_classes}")
    letters = list(string.ascii_uppercase[:num_classes])
    ids = []
    for letter in letters:
        enc = tokenizer.encode(" " + letter, add_special_tokens=False)
        if len(enc) != 1:
            pieces = tokenizer.convert_ids_to_tokens(enc)
            raise ValueError(
                f"the answer letter {' ' + letter!r} is {len(enc)} tokens {pieces} for this tokenizer; multiple-choice "
                "scoring reads one next-token logit per letter, so each of ' A', ' B', ... must be a single token"
            )
        ids.append(int(enc[0]))
    if len(set(ids)) != len(ids):
        raise ValueError(f"answer letters {letters} map to repeated token ids {ids}; the tokenizer cannot tell them apart")
    return letters, ids


def _causal_builder(config_cls_name: str | None):
    def build(cfg: ModelConfig, num_classes: int, pretrained: bool, tokenizer: Any = None) -> ChoiceLM:
        import transformers

        entry = MODELS.get(cfg.name)
        tok = load_tokenizer(cfg, entry, tokenizer)
        letters, ids = letter_token_ids(tok, num_classes)
        if pretrained:
            model = from_pretrained(transformers.AutoModelForCausalLM, cfg, entry, ())
        else:
            default = getattr(transformers, config_cls_name) if config_cls_name else None
            conf = config_from(cfg, default, **_fixed_for_tokenizer(cfg, tok))
            model = transformers.AutoModelForCausalLM.from_config(conf)
        _check_vocab(model, tok, cfg.name)
        return ChoiceLM(
            model, letter_ids=ids, letters=letters, name=cfg.name, family="hf_causal", num_classes=num_classes,
            input_spec=InputSpec(kind="text", tokenizer=tok, max_length=cfg.max_length),
            head_modules=[], default_targets=attention_targets(model),
        )

    return build


register_model("hf_causal_lm", "hf_causal", True, description="any causal LM directory (model.path) or config, multiple choice")(
    _causal_builder(None)
)
register_model("phi-2", "hf_causal", True, hub_id="microsoft/phi-2", description="Microsoft Phi-2 (2.7B), multiple choice")(
    _causal_builder("PhiConfig")
)
