"""GLUE MRPC (Microsoft Research Paraphrase Corpus): sentence-pair paraphrase classification, 2 classes.

Local layout: ``<root>/MRPC/{train.tsv, dev.tsv[, test.tsv]}`` (``data.root`` may also point at the MRPC directory
itself). Files are tab-separated with the header ``Quality  #1 ID  #2 ID  #1 String  #2 String`` (a UTF-8 BOM is
tolerated); strings contain literal quote characters, so they are read with ``csv.QUOTE_NONE``.
``Quality`` is the label (1 = paraphrase).

When ``data.root`` holds none of these files, MRPC is loaded from the Hugging Face hub with ``datasets``
(:data:`HUB`: ``nyu-mll/glue``, config ``mrpc``; cached after the first download, see :mod:`bayespeft.data.hub`):
its splits ``train`` / ``validation`` / ``test`` are the same rows as ``train.tsv`` / ``dev.tsv`` / ``test.tsv``,
with the columns ``sentence1``, ``sentence2``, ``label`` (1 = equivalent; -1 in the unlabelled test split) and
``idx``. Both sources give the same examples; ``metadata["source"]`` records which one was read.

Splits: ``train.tsv`` -> seeded, stratified train/val split (``val_fraction``); ``dev.tsv`` is the labelled test
set. The public GLUE ``test.tsv`` has no labels (its first column is ``index``, or Quality is "?"): it is never
used for metrics -- its presence and whether it is labelled are only recorded in ``metadata["test_tsv"]``.

Examples are tokenised as sentence pairs ``(#1 String, #2 String)`` with the model's tokenizer, truncated to
``max_length`` tokens ("longest_first"), without padding (the collate function pads on the right); the number of
pairs truncated per file is a warning and is stored in ``metadata["truncated"]``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..inputs import InputSpec
from .base import DataBundle, DatasetInfo, check_modality, register_dataset, split_indices, subsample, warn_rows
from .collate import Collator, ensure_pad_token
from .config import DataConfig
from .hub import HubDataset, load_hub, local_source
from .text import TokenizedDataset, tokenize

INFO = DatasetInfo(num_classes=2, task="sequence_classification", modality="text")
COLUMNS = ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String")
LAYOUT = "<root>/MRPC/{train.tsv,dev.tsv} (tab-separated, header: Quality\\t#1 ID\\t#2 ID\\t#1 String\\t#2 String)"
#: The Hugging Face hub copy, read when data.root holds no MRPC file.
HUB = HubDataset("nyu-mll/glue", "mrpc", ("train", "validation"))
#: (sentences1, sentences2, labels) of one split.
Pairs = tuple[list[str], list[str], list[int]]


def mrpc_dir(root: str | Path) -> Path:
    """``<root>/MRPC`` or ``root`` itself when it holds train.tsv; a clear FileNotFoundError otherwise."""
    root = Path(root)
    for cand in (root / "MRPC", root):
        if (cand / "train.tsv").is_file() and (cand / "dev.tsv").is_file():
            return cand
    base = root / "MRPC" if (root / "MRPC").is_dir() or not (root / "train.tsv").exists() else root
    missing = [f for f in ("train.tsv", "dev.tsv") if not (base / f).is_file()]
    raise FileNotFoundError(
        f"mrpc: {base} lacks {', '.join(missing)}. Expected the GLUE layout {LAYOUT} with data.root={str(root)!r} "
        f"(or no MRPC file there at all, to load the Hugging Face dataset {HUB})."
    )


def local_mrpc_dir(root: str | Path) -> Path | None:
    """The local MRPC directory (:func:`mrpc_dir`), or None when ``root`` holds none of its files (then the hub)."""
    root = Path(root)
    if not any((d / f).exists() for d in (root / "MRPC", root) for f in ("train.tsv", "dev.tsv")):
        return None
    return mrpc_dir(root)


def read_tsv(path: Path) -> tuple[list[str], list[list[str]]]:
    """Read a GLUE TSV (no quoting: quote characters are data) -> (header, rows); every row must be complete."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path} is empty; expected a header line {COLUMNS}")
        rows = []
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise ValueError(f"{path}:{lineno}: expected {len(header)} tab-separated fields ({header}), got {len(row)}")
            rows.append(row)
    return header, rows


def read_mrpc(path: Path) -> tuple[list[str], list[str], list[int]]:
    """Return (sentences1, sentences2, labels) of a labelled MRPC TSV."""
    header, rows = read_tsv(path)
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected header {list(COLUMNS)}, found {header}")
    q, s1, s2 = header.index("Quality"), header.index("#1 String"), header.index("#2 String")
    labels = []
    for i, row in enumerate(rows):
        if row[q] not in ("0", "1"):
            raise ValueError(f"{path}: row {i + 2} has Quality {row[q]!r}; labels must be 0 or 1")
        labels.append(int(row[q]))
    return [r[s1] for r in rows], [r[s2] for r in rows], labels


def unlabelled_test_status(directory: Path) -> str:
    """'absent', 'unlabelled' (no Quality column or all '?') or 'labelled (not used)' for ``test.tsv``."""
    path = directory / "test.tsv"
    if not path.is_file():
        return "absent"
    header, rows = read_tsv(path)
    if "Quality" not in header or all(r[header.index("Quality")] == "?" for r in rows):
        return "unlabelled"
    return "labelled (not used)"


def read_local(directory: Path) -> tuple[dict[str, Pairs], str, dict]:
    """(pairs of train.tsv and dev.tsv as ``train`` / ``test``, test.tsv status, source record)."""
    pairs = {"train": read_mrpc(directory / "train.tsv"), "test": read_mrpc(directory / "dev.tsv")}
    return pairs, unlabelled_test_status(directory), local_source(directory, {"train": "train.tsv", "test": "dev.tsv"})


def hub_pairs(dd, split: str) -> Pairs:
    """The pairs of split ``split`` of the hub's ``DatasetDict`` (labels must be 0 or 1)."""
    ds = dd[split]
    missing = [c for c in ("sentence1", "sentence2", "label") if c not in ds.column_names]
    if missing:
        raise ValueError(f"mrpc: the {HUB} split {split!r} lacks the column(s) {missing} (has {ds.column_names})")
    labels = [int(v) for v in ds["label"]]
    bad = sorted({v for v in labels if v not in (0, 1)})
    if bad:
        raise ValueError(f"mrpc: the {HUB} split {split!r} has labels {bad}; labels must be 0 or 1")
    return list(ds["sentence1"]), list(ds["sentence2"]), labels


def read_hub(root: str | Path) -> tuple[dict[str, Pairs], str, dict]:
    """Like :func:`read_local` from the hub: ``train`` <- split train, ``test`` <- validation (= dev.tsv)."""
    dd, source = load_hub("mrpc", HUB, root, LAYOUT)
    pairs = {"train": hub_pairs(dd, "train"), "test": hub_pairs(dd, "validation")}
    if "test" not in dd:
        status = "absent"
    else:
        status = "unlabelled" if all(int(v) == -1 for v in dd["test"]["label"]) else "labelled (not used)"
    return pairs, status, source


@register_dataset("mrpc", INFO)
def build_mrpc(cfg: DataConfig, spec: InputSpec) -> DataBundle:
    check_modality("mrpc", INFO, spec)
    if cfg.shift != "none":
        raise ValueError(f"data.shift={cfg.shift!r} is only defined for image datasets; use shift='none' for mrpc")
    directory = local_mrpc_dir(cfg.root)
    pairs, test_status, source = read_local(directory) if directory is not None else read_hub(cfg.root)
    tok = spec.tokenizer
    pad_id = ensure_pad_token(tok)
    max_length = cfg.max_length or spec.max_length
    data = {}
    truncated = {}
    for split, (a, b, y) in pairs.items():
        enc, truncated[split] = tokenize(tok, a, b, max_length=max_length, desc=f"tokenize mrpc/{split}")
        data[split] = TokenizedDataset(enc, y)
    full_train = data["train"]
    tr, va = split_indices(np.arange(len(full_train)), full_train.targets.numpy(), cfg.val_fraction, cfg.split_seed)
    train = full_train.subset(subsample(tr, cfg.max_train, cfg.split_seed + 1))
    val = full_train.subset(subsample(va, cfg.max_val, cfg.split_seed + 2))
    test = data["test"].subset(subsample(np.arange(len(data["test"])), cfg.max_test, cfg.split_seed + 3))
    warn_rows("mrpc", "truncated", truncated, {s: len(d) for s, d in data.items()}, "sentence pairs",
              f"longer than max_length={max_length} tokens; raise data.max_length to keep them whole")
    return DataBundle(
        train=train, val=val, test=test, test_shift=None,
        num_classes=INFO.num_classes, task=INFO.task, modality=INFO.modality, collate_fn=Collator(pad_id),
        seed=cfg.split_seed, batch_size=cfg.batch_size, eval_batch_size=cfg.eval_batch_size, num_workers=cfg.num_workers,
        metadata={"sizes": {"train": len(train), "val": len(val), "test": len(test)}, "max_length": max_length,
                  "truncated": truncated, "test_tsv": test_status, "source": source,
                  "test_source": "dev.tsv" if directory is not None else "validation (GLUE dev.tsv)",
                  "class_names": ["not_paraphrase", "paraphrase"]},
    )
