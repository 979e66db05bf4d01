"""AI2 Reasoning Challenge (ARC-Easy / ARC-Challenge) as 4-way multiple choice for causal language models.

Layout (the AI2 release ``ARC-V1-Feb2018``)::

    <root>/ARC-Easy/ARC-Easy-{Train,Dev,Test}.jsonl      (ARC-Challenge likewise)

``data.root`` may also point at the subset directory itself or at ``ARC-V1-Feb2018-2/``. When it holds none of
these files, the subset is loaded from the Hugging Face hub with ``datasets`` (``allenai/ai2_arc``, config
``ARC-Easy`` / ``ARC-Challenge``; cached after the first download, see :mod:`bayespeft.data.hub`): its splits
``train`` / ``validation`` / ``test`` are Train / Dev / Test, its rows ``{"id", "question": stem, "choices":
{"text": [...], "label": [...]}, "answerKey"}`` the same questions, so both sources give the same examples;
``metadata["source"]`` records which one was read. Each line is
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
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..inputs import InputSpec
from .base import DataBundle, DatasetInfo, check_modality, register_dataset, split_indices, subsample, warn_rows
from .collate import Collator, ensure_pad_token
from .config import DataConfig
from .hub import HubDataset, load_hub, local_source
from .text import TokenizedDataset, tokenize

INFO = DatasetInfo(num_classes=4, task="multiple_choice", modality="text")
LETTERS = "ABCDE"
NUM_CHOICES = 4
#: The file split names of the AI2 release and the hub split each one is.
SPLITS = {"Train": "train", "Dev": "validation", "Test": "test"}
#: (prompts, labels, number of questions dropped for not having 4 choices) of one split.
Questions = tuple[list[str], list[int], int]


def hub_dataset(subset: str) -> HubDataset:
    """The Hugging Face hub copy of ``subset`` (ARC-Easy or ARC-Challenge); Dev (validation) is optional."""
    return HubDataset("allenai/ai2_arc", subset, ("train", "test"))


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


def parse_questions(objs: Iterable[tuple[str, dict[str, Any]]]) -> Questions:
    """``(where, question)`` pairs -> (prompts, labels, number dropped for not having 4 choices)."""
    prompts, labels, dropped = [], [], 0
    for where, obj in objs:
        parsed = parse_question(obj, where)
        if parsed is None:
            dropped += 1
            continue
        prompts.append(parsed[0])
        labels.append(parsed[1])
    return prompts, labels, dropped


def _jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield f"{path}:{lineno}", json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None


def read_arc(path: Path) -> Questions:
    """Read one ARC JSONL file -> (prompts, labels, number of questions dropped for not having 4 choices)."""
    return parse_questions(_jsonl(path))


def hub_question(row: dict[str, Any], where: str) -> dict[str, Any]:
    """A row of the hub's ``allenai/ai2_arc`` in the shape of a line of the AI2 JSONL files."""
    try:
        choices = row["choices"]
        return {"id": row.get("id"), "answerKey": row["answerKey"],
                "question": {"stem": row["question"],
                             "choices": [{"text": t, "label": lab} for t, lab in zip(choices["text"], choices["label"], strict=True)]}}
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{where}: not an allenai/ai2_arc row (need id, question, choices.text/label, answerKey): "
                         f"{type(e).__name__} {e}") from None


def read_hub(subset: str, root: str | Path) -> tuple[dict[str, Questions], dict[str, Any]]:
    """The questions of each split of the hub copy of ``subset`` (keyed Train / Dev / Test) and the source record."""
    hub = hub_dataset(subset)
    dd, source = load_hub(subset, hub, root, local_files(subset))
    out = {}
    for split, hub_split in SPLITS.items():
        if hub_split in dd:
            where = f"{hub.hub_id}/{subset} {hub_split} row"
            rows = enumerate(dd[hub_split])
            out[split] = parse_questions((f"{where} {i}", hub_question(r, f"{where} {i}")) for i, r in rows)
    return out, source


def local_files(subset: str) -> str:
    return (f"{subset}-Train.jsonl and {subset}-Test.jsonl ({subset}-Dev.jsonl optional) in <root>/{subset}/, the "
            "AI2 ARC JSONL layout")


def _candidates(root: Path, subset: str) -> tuple[Path, ...]:
    return (root / subset, root, root / "ARC-V1-Feb2018-2" / subset, root / "ARC-V1-Feb2018" / subset)


def arc_dir(root: str | Path, subset: str) -> Path:
    """Find the directory holding ``{subset}-Train.jsonl`` and ``{subset}-Test.jsonl``."""
    root = Path(root)
    for cand in _candidates(root, subset):
        if (cand / f"{subset}-Train.jsonl").is_file() and (cand / f"{subset}-Test.jsonl").is_file():
            return cand
    base = root / subset
    missing = [f"{subset}-{s}.jsonl" for s in ("Train", "Test") if not (base / f"{subset}-{s}.jsonl").is_file()]
    raise FileNotFoundError(
        f"{subset}: {base} lacks {', '.join(missing)}. Expected the AI2 ARC JSONL layout "
        f"<root>/{subset}/{subset}-{{Train,Dev,Test}}.jsonl (Dev optional) with data.root={str(root)!r} "
        f"(or no {subset} file there at all, to load the Hugging Face dataset {hub_dataset(subset)})."
    )


def local_arc_dir(root: str | Path, subset: str) -> Path | None:
    """The local subset directory (:func:`arc_dir`), or None when ``root`` holds none of its files (then the hub)."""
    root = Path(root)
    if not any((c / f"{subset}-{s}.jsonl").exists() for c in _candidates(root, subset) for s in SPLITS):
        return None
    return arc_dir(root, subset)


def read_local(directory: Path, subset: str) -> tuple[dict[str, Questions], dict[str, Any]]:
    """The questions of each JSONL file present (keyed Train / Dev / Test) and the source record."""
    files = {s: f"{subset}-{s}.jsonl" for s in SPLITS if (directory / f"{subset}-{s}.jsonl").is_file()}
    return {s: read_arc(directory / f) for s, f in files.items()}, local_source(directory, files)


def _build(name: str, subset: str, cfg: DataConfig, spec: InputSpec) -> DataBundle:
    check_modality(name, INFO, spec)
    if cfg.shift != "none":
        raise ValueError(f"data.shift={cfg.shift!r} is only defined for image datasets; use shift='none' for {name}")
    directory = local_arc_dir(cfg.root, subset)
    questions, source = read_local(directory, subset) if directory is not None else read_hub(subset, cfg.root)
    tok = spec.tokenizer
    pad_id = ensure_pad_token(tok)
    max_length = cfg.max_length or spec.max_length
    sets: dict[str, TokenizedDataset] = {}
    dropped: dict[str, int] = {}
    truncated: dict[str, int] = {}
    read: dict[str, int] = {}
    for split, (prompts, labels, n_dropped) in questions.items():
        key = split.lower()
        dropped[key], read[key] = n_dropped, len(prompts) + n_dropped
        enc, truncated[key] = tokenize(tok, prompts, max_length=max_length, truncation_side="left",
                                       desc=f"tokenize {subset}-{split}")
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
                  "truncated": truncated, "max_length": max_length, "val_source": val_source, "source": source,
                  "class_names": list(LETTERS[:NUM_CHOICES])},
    )


@register_dataset("arc_easy", INFO)
def build_arc_easy(cfg: DataConfig, spec: InputSpec) -> DataBundle:
    return _build("arc_easy", "ARC-Easy", cfg, spec)


@register_dataset("arc_challenge", INFO)
def build_arc_challenge(cfg: DataConfig, spec: InputSpec) -> DataBundle:
    return _build("arc_challenge", "ARC-Challenge", cfg, spec)
