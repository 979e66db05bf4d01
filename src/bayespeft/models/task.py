"""``TaskModel``: one interface over every backbone family (timm, transformers, torchvision, micro ViT).

A ``TaskModel`` maps a batch's inputs to logits of shape ``(B, num_classes)``:

* ``ImageClassifier``: ``forward(pixel_values (B, C, H, W)) -> (B, K)``;
* ``SequenceClassifier``: ``forward(input_ids (B, L), attention_mask (B, L), token_type_ids (B, L) | None) -> (B, K)``;
* ``ChoiceLM`` (causal-LM multiple choice): the next-token logits at the last non-pad position, restricted to the
  single-token ids of the answer letters ``" A", " B", ...`` -> ``(B, K)`` (see :class:`ChoiceLM`).

Attributes every consumer may rely on: ``input_spec``, ``num_classes``, ``task``, ``family``, ``name`` (registry
name), ``backbone`` (the raw network; a ``peft.PeftModel`` after a PEFT adapter is applied), ``head_names``
(qualified names, in this module's namespace, of the classification head modules; valid before and after PEFT
wrapping), ``default_targets`` (LoRA target module names for this architecture).

Frozen normalisation layers: ``train()`` keeps every BatchNorm whose affine parameters are all frozen in eval mode
(frozen running statistics), so LoRA/linear fine-tuning of a CNN does not silently change buffers that the adapter
checkpoint does not store.
"""

from __future__ import annotations

import inspect
from typing import Literal

import torch
from torch import nn

from ..batch import last_token_index
from ..inputs import InputSpec

Task = Literal["image_classification", "sequence_classification", "multiple_choice"]


def unwrap_peft(module: nn.Module) -> tuple[nn.Module, str]:
    """Return ``(base network, prefix)`` where ``prefix`` is the path from ``module`` to the base network.

    For a ``peft.PeftModel`` the base network lives at ``base_model.model``; otherwise ``module`` itself (prefix "").
    """
    base_model = getattr(module, "base_model", None)
    inner = getattr(base_model, "model", None)
    if base_model is not None and inner is not None and hasattr(module, "peft_config"):
        return inner, "base_model.model."
    return module, ""


class TaskModel(nn.Module):
    """Base class; subclasses define ``forward``. See the module docstring for the contract."""

    task: Task

    def __init__(
        self,
        backbone: nn.Module,
        *,
        name: str,
        family: str,
        num_classes: int,
        input_spec: InputSpec,
        head_modules: list[str],
        default_targets: list[str],
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.name = name
        self.family = family
        self.num_classes = int(num_classes)
        self.input_spec = input_spec
        self.head_modules = list(head_modules)  # relative to the raw backbone
        self.default_targets = list(default_targets)
        self.adapter_method: str | None = None  # set by bayespeft.adapters.apply_adapter
        self.adapter_config = None  # the AdapterConfig applied (bayespeft.adapters)

    # -- names ----------------------------------------------------------------------------------------------------
    @property
    def base_network(self) -> nn.Module:
        """The raw backbone network (inside the PEFT wrapper when there is one)."""
        return unwrap_peft(self.backbone)[0]

    @property
    def backbone_prefix(self) -> str:
        """Qualified-name prefix of the raw backbone inside this module: ``"backbone."`` or ``"backbone.base_model.model."``."""
        return "backbone." + unwrap_peft(self.backbone)[1]

    @property
    def head_names(self) -> list[str]:
        """Qualified names (in ``self.named_modules()``) of the classification head modules.

        After PEFT wrapping the head sits in a ``ModulesToSaveWrapper``; the name then covers both the frozen original
        and the trainable copy, so selecting the *trainable* parameters under it gives exactly the tuned head.
        """
        return [self.backbone_prefix + h for h in self.head_modules]

    # -- frozen normalisation statistics --------------------------------------------------------------------------
    def train(self, mode: bool = True) -> TaskModel:
        super().train(mode)
        if mode:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    params = list(m.parameters(recurse=False))
                    if params and not any(p.requires_grad for p in params):
                        m.eval()
        return self

    def extra_repr(self) -> str:
        return f"name={self.name!r}, family={self.family!r}, task={self.task!r}, num_classes={self.num_classes}"


def _logits(out) -> torch.Tensor:
    return out if torch.is_tensor(out) else out.logits


class ImageClassifier(TaskModel):
    """``forward(pixel_values (B, C, H, W)) -> logits (B, K)``.

    ``call_style``: "positional" (timm/torchvision: ``backbone(x)``) or "hf" (``backbone(pixel_values=x).logits``).
    """

    task: Task = "image_classification"

    def __init__(
        self,
        backbone: nn.Module,
        *,
        call_style: Literal["positional", "hf"] = "positional",
        forward_kwargs: dict | None = None,
        **kw,
    ) -> None:
        super().__init__(backbone, **kw)
        self.call_style = call_style
        self.forward_kwargs = dict(forward_kwargs or {})  # e.g. interpolate_pos_encoding=True (HF ViT at a new size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.call_style == "hf":
            return _logits(self.backbone(pixel_values=pixel_values, **self.forward_kwargs))
        return _logits(self.backbone(pixel_values))


class SequenceClassifier(TaskModel):
    """A transformers ``*ForSequenceClassification`` model: ``forward(input_ids, attention_mask, token_type_ids)``."""

    task: Task = "sequence_classification"

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        kw = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kw["token_type_ids"] = token_type_ids
        return _logits(self.backbone(**kw))


class ChoiceLM(TaskModel):
    """Causal-LM multiple choice scored by the next token after the prompt.

    For a right-padded prompt ``x_{1:T_b}`` (ending in ``"Answer:"``) the score of choice ``k`` is the LM logit
    ``z_b[t_k] = f(x_{1:T_b})[t_k]`` at the last non-pad position ``T_b`` (the last 1 of ``attention_mask``), where
    ``t_k`` is the single-token id of ``" A"``, ``" B"``, ... (``letter_ids``). Softmax over these ``K`` logits is
    the choice distribution (the rest of the vocabulary is ignored). Output ``(B, K)``.

    ``token_type_ids`` is accepted and ignored (causal LMs have no segment embeddings to feed; GPT-2 would otherwise
    add token-type embeddings). Only the logits at the needed positions are computed when the backbone supports
    transformers' ``logits_to_keep``.
    """

    task: Task = "multiple_choice"

    def __init__(self, backbone: nn.Module, *, letter_ids: list[int], letters: list[str], **kw) -> None:
        super().__init__(backbone, **kw)
        self.letters = list(letters)
        self.logits_to_keep = "logits_to_keep" in inspect.signature(backbone.forward).parameters
        self.register_buffer("letter_ids", torch.tensor(letter_ids, dtype=torch.long), persistent=False)

    #: index of the last non-pad token per row (B,); see :func:`bayespeft.batch.last_token_index`
    last_positions = staticmethod(last_token_index)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        pos = self.last_positions(attention_mask)
        keep, inverse = torch.unique(pos, return_inverse=True)
        kw = {"logits_to_keep": keep} if self.logits_to_keep else {}
        logits = _logits(self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kw))
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        # with logits_to_keep the sequence axis holds only the positions in `keep` (sorted): row b reads `inverse[b]`
        at_last = logits[rows, inverse] if kw else logits[rows, pos]
        return at_last.index_select(-1, self.letter_ids)
