"""AI2 Reasoning Challenge (ARC-Easy / ARC-Challenge) as 4-way multiple choice for causal language models.

Layout (the AI2 release ``ARC-V1-Feb2018``)::

    <root>/ARC-Easy/ARC-Easy-{Train,Dev,Test}.jsonl      (ARC-Challenge likewise)

``data.root`` may also point at the subset directory itself or at ``ARC-V1-Feb2018-2/``. Each line is
``{"id", "question": {"stem", "choices": [{"text", "label"}, ...]}, "answerKey"}``; labels are "A".."E" or
"1".."5" (numeric labels are mapped to letters, 1 -> A). Only questions with exactly 4 choices are kept (the
large majority); the number dropped per split (test included) is a warning and is stored in ``metadata["dropped"]``,
as is the number of prompts truncated to ``max_length`` (``metadata["truncated"]``).

Each question becomes the prompt (no answer appended)::

    Question: {stem}
    A. {choice 1}
    B. {choice 2}
    C. {choice 3}
    D. {choice 4}
    Answer:

tokenised with the model's tokenizer; too-long prompts are truncated from the LEFT so that they still end with
"Answer:" (the model reads the next-token logits of " A".." D" at the last non-pad position). The label is the
position (0..3) of the choice whose label equals ``answerKey``.

Splits: Train -> train; Dev -> val when ``ARC-*-Dev.jsonl`` exists, else a seeded ``val_fraction`` split of
Train; Test -> test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..inputs import InputSpec
from .base import DataBundle, DatasetInfo, check_modality, register_dataset, split_indices, subsample, warn_rows
from .collate import Collator, ensure_pad_token
from .config import DataConfig
from .text import TokenizedDataset, tokenize

INFO = DatasetInfo(num_classes=4, task="multiple_choice", modality="text")
LETTERS = "ABCDE"
NUM_CHOICES = 4


def format_prompt(stem: str, choices: list[str]) -> str:
    """The zero-shot prompt for one question; ends with "Answer:" (no trailing space)."""
    lines = [f"Question: {stem}"] + [f"{LETTERS[i]}. {c}" for i, c in enumerate(choices)]
    return "\n".join(lines) + "\nAnswer:"


def _letter(label: str) -> str:
    label = str(label).strip()
    return LETTERS[int(label) - 1] if label.isdigit() and 1 <= int(label) <= len(LETTERS) else label


def parse_question(obj: dict[str, Any], where: str) -> tuple[str, int] | None:
    """Return ``(prompt, answer index)`` for a 4-choice question, or None when it has another number of choices."""
    try:
        q, key = obj["question"], obj["answerKey"]
        stem, choices = q["stem"], q["choices"]
        labels = [_letter(c["label"]) for c in choices]
        texts = [c["text"] for c in choices]
    except (KeyError, TypeError) as e:
        raise ValueError(f"{where}: not an ARC question (need question.stem, question.choices[].text/label, answerKey): missing {e}") from None
    if len(choices) != NUM_CHOICES:
        return None
    answer = _letter(key)
    if answer not in labels:
        raise ValueError(f"{where}: answerKey {key!r} is not one of the choice labels {labels}")
    return format_prompt(stem, texts), labels.index(answer)


def read_arc(path: Path) -> tuple[list[str], list[int], int]:
    """Read one ARC JSONL file -> (prompts, labels, number of questions dropped for not having 4 choices)."""
    prompts, labels, dropped = [], [], 0
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
            parsed = parse_question(obj, f"{path}:{lineno}")
            if parsed is None:
                dropped += 1
                continue
            prompts.append(parsed[0])
            labels.append(parsed[1])
    return prompts, labels, dropped


def arc_dir(root: str | Path, subset: str) -> Path:
    """Find the directory holding ``{subset}-Train.jsonl`` and ``{subset}-Test.jsonl``."""
    root = Path(root)
    cands = (root / subset, root, root / "ARC-V1-Feb2018-2" / subset, root / "ARC-V1-Feb2018" / subset)
    for cand in cands:
        if (cand / f"{subset}-Train.jsonl").is_file() and (cand / f"{subset}-Test.jsonl").is_file():
            return cand
    base = root / subset
    missing = [f"{subset}-{s}.jsonl" for s in ("Train", "Test") if not (base / f"{subset}-{s}.jsonl").is_file()]
    raise FileNotFoundError(
        f"{subset}: {base} lacks {', '.join(missing)}. Expected the AI2 ARC JSONL layout "
        f"<root>/{subset}/{subset}-{{Train,Dev,Test}}.jsonl (Dev optional) with data.root={str(root)!r}. "
        "There is no automatic download; unpack ARC-V1-Feb2018 and point data.root at the directory containing "
        f"{subset}/."
    )


def _build(name: str, subset: str, cfg: DataConfig, spec: InputSpec) -> DataBundle:
    check_modality(name, INFO, spec)
    if cfg.shift != "none":
        raise ValueError(f"data.shift={cfg.shift!r} is only defined for image datasets; use shift='none' for {name}")
    directory = arc_dir(cfg.root, subset)
    tok = spec.tokenizer
    pad_id = ensure_pad_token(tok)
    max_length = cfg.max_length or spec.max_length
    sets: dict[str, TokenizedDataset] = {}
    dropped: dict[str, int] = {}
    truncated: dict[str, int] = {}
    read: dict[str, int] = {}
    for split in ("Train", "Dev", "Test"):
        path = directory / f"{subset}-{split}.jsonl"
        if not path.is_file():
            continue
        prompts, labels, dropped[split.lower()] = read_arc(path)
        read[split.lower()] = len(prompts) + dropped[split.lower()]
        enc, truncated[split.lower()] = tokenize(tok, prompts, max_length=max_length, truncation_side="left", desc=f"tokenize {path.name}")
        sets[split] = TokenizedDataset(enc, labels)
    warn_rows(name, "dropped", dropped, read, "questions", f"(not exactly {NUM_CHOICES} choices: the model scores the "
              f"letters {LETTERS[0]}-{LETTERS[NUM_CHOICES - 1]})")
    kept = {s: n - dropped[s] for s, n in read.items()}
    warn_rows(name, "truncated", truncated, kept, "prompts", f"longer than max_length={max_length} tokens (cut on the "
              "left, keeping 'Answer:'); raise data.max_length to keep them whole")
    full = sets["Train"]
    if "Dev" in sets:
        tr, val_ds = np.arange(len(full)), sets["Dev"]
        va = np.arange(len(val_ds))
        val_source = "dev"
    else:
        tr, va = split_indices(np.arange(len(full)), full.targets.numpy(), cfg.val_fraction, cfg.split_seed)
        val_ds, val_source = full, "train split"
    train = full.subset(subsample(tr, cfg.max_train, cfg.split_seed + 1))
    val = val_ds.subset(subsample(va, cfg.max_val, cfg.split_seed + 2))
    test = sets["Test"].subset(subsample(np.arange(len(sets["Test"])), cfg.max_test, cfg.split_seed + 3))
    return DataBundle(
        train=train, val=val, test=test, test_shift=None,
        num_classes=INFO.num_classes, task=INFO.task, modality=INFO.modality, collate_fn=Collator(pad_id),
        seed=cfg.split_seed, batch_size=cfg.batch_size, eval_batch_size=cfg.eval_batch_size, num_workers=cfg.num_workers,
        metadata={"sizes": {"train": len(train), "val": len(val), "test": len(test)}, "dropped": dropped,
                  "truncated": truncated, "max_length": max_length, "val_source": val_source,
                  "class_names": list(LETTERS[:NUM_CHOICES])},
    )


@register_dataset("arc_easy", INFO)
def build_arc_easy(cfg: DataConfig, spec: InputSpec) -> DataBundle:
    return _build("arc_easy", "ARC-Easy", cfg, spec)


@register_dataset("arc_challenge", INFO)
def build_arc_challenge(cfg: DataConfig, spec: InputSpec) -> DataBundle:
    return _build("arc_challenge", "ARC-Challenge", cfg, spec)
