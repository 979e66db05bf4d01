"""GLUE MRPC and AI2 ARC from the Hugging Face hub (``datasets``) when ``data.root`` holds no local files.

The same rows are written both ways -- local files in the format the loaders read (GLUE TSV, AI2 JSONL) and a real
``datasets.DatasetDict`` with the hub's schema (MRPC: sentence1, sentence2, label, idx; ARC: id, question,
choices{text,label}, answerKey; splits train/validation/test) -- and ``datasets.load_dataset``, the network
boundary, is replaced by a fake that records the (path, name) it was asked for and returns that DatasetDict. Both
sources must give identical examples. Offline with nothing cached, the real ``load_dataset`` runs (against the
suite's empty ``HF_DATASETS_CACHE``) and the error is one line naming the dataset id, config and expected files.
With the hub unreachable (its endpoint a closed local port, tests/hub_net.py) the real ``load_dataset`` reads a
cache written in ``datasets``' own prepared layout, or the error line says the hub cannot be reached.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
import torch

from bayespeft.data import DataConfig, build_data
from bayespeft.errors import HubError
from bayespeft.inputs import InputSpec

MRPC_FEATURES = datasets.Features({
    "sentence1": datasets.Value("string"), "sentence2": datasets.Value("string"),
    "label": datasets.ClassLabel(names=["not_equivalent", "equivalent"]), "idx": datasets.Value("int32"),
})
ARC_FEATURES = datasets.Features({
    "id": datasets.Value("string"), "question": datasets.Value("string"),
    "choices": {"text": datasets.List(datasets.Value("string")), "label": datasets.List(datasets.Value("string"))},
    "answerKey": datasets.Value("string"),
})
COMMIT = "bcdcba79d07bc864c1c254ccfcedcce55bcc9a8c"


@pytest.fixture()
def hub(monkeypatch):
    """Replace ``datasets.load_dataset``: serve ``hub.served[(path, name)]`` and record each request in
    ``hub.calls``."""

    class Hub:
        calls: list[tuple[str, str]] = []
        served: dict[tuple[str, str], datasets.DatasetDict] = {}

    def fake_load_dataset(path, name=None, **kw):
        Hub.calls.append((path, name))
        return Hub.served[(path, name)]

    Hub.calls, Hub.served = [], {}
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    return Hub


def assert_same_examples(a, b) -> None:
    for split in ("train", "val", "test"):
        da, db = getattr(a, split), getattr(b, split)
        assert len(da) == len(db) > 0, split
        for i in range(len(da)):
            x, y = da[i], db[i]
            assert x.keys() == y.keys()
            for k in x:
                assert torch.equal(x[k], y[k]), (split, i, k)
    ra, rb = a.record(), b.record()
    assert {k: v for k, v in ra.items() if k not in ("source", "test_source")} == \
        {k: v for k, v in rb.items() if k not in ("source", "test_source")}


def mrpc_split(rows: list[tuple[int, str, str]], labelled: bool = True) -> datasets.Dataset:
    return datasets.Dataset.from_dict({
        "sentence1": [a for _, a, _ in rows], "sentence2": [b for _, _, b in rows],
        "label": [q if labelled else -1 for q, _, _ in rows], "idx": list(range(len(rows))),
    }, features=MRPC_FEATURES)


def test_mrpc_from_hub_equals_local_tsvs(mrpc_root, minilm_tokenizer, hub, tmp_path):
    root, rows = mrpc_root
    dd = datasets.DatasetDict(train=mrpc_split(rows["train"]), validation=mrpc_split(rows["dev"]),
                              test=mrpc_split(rows["dev"][:3], labelled=False))
    # stored like datasets' cache (<cache>/nyu-mll___glue/mrpc/0.0.0/<commit>/) and read back: arrow-backed splits
    stored = tmp_path / "cache" / "nyu-mll___glue" / "mrpc" / "0.0.0" / COMMIT
    dd.save_to_disk(str(stored))
    hub.served[("nyu-mll/glue", "mrpc")] = datasets.load_from_disk(str(stored))
    spec = InputSpec(kind="text", tokenizer=minilm_tokenizer, max_length=24)
    settings = dict(name="mrpc", max_train=40, max_test=10, split_seed=3)
    local = build_data(DataConfig(root=str(root), **settings), spec)
    assert hub.calls == []
    empty = tmp_path / "empty"
    from_hub = build_data(DataConfig(root=str(empty), **settings), spec)
    assert hub.calls == [("nyu-mll/glue", "mrpc")]
    assert_same_examples(local, from_hub)
    assert local.record()["source"] == {"kind": "local files", "directory": str(root / "MRPC"),
                                        "files": {"train": "train.tsv", "test": "dev.tsv"}}
    src = from_hub.record()["source"]
    assert (src["kind"], src["hub_id"], src["config"], src["revision"]) == ("hub", "nyu-mll/glue", "mrpc", COMMIT)
    assert set(src["fingerprint"]) == {"train", "validation", "test"} and all(src["fingerprint"].values())
    assert from_hub.metadata["test_tsv"] == local.metadata["test_tsv"] == "unlabelled"


def arc_hub_split(questions: list[dict]) -> datasets.Dataset:
    return datasets.Dataset.from_list([
        {"id": q["id"], "question": q["question"]["stem"], "answerKey": q["answerKey"],
         "choices": {"text": [c["text"] for c in q["question"]["choices"]],
                     "label": [c["label"] for c in q["question"]["choices"]]}}
        for q in questions], features=ARC_FEATURES)


@pytest.mark.parametrize("name,subset", [("arc_easy", "ARC-Easy"), ("arc_challenge", "ARC-Challenge")])
def test_arc_from_hub_equals_local_jsonl(name, subset, arc_writer, gpt2_like_tokenizer, hub, tmp_path):
    arc_question, write_arc = arc_writer
    splits = {
        "Train": [arc_question(i) for i in range(16)] + [arc_question(16, numeric=True, answer=2),
                                                          arc_question(17, n_choices=5, answer=4)],
        "Dev": [arc_question(100 + i) for i in range(5)],
        "Test": [arc_question(200 + i) for i in range(7)] + [arc_question(300, n_choices=3)],
    }
    for split, qs in splits.items():
        write_arc(tmp_path / "local" / subset, split, qs, subset=subset)
    hub.served[("allenai/ai2_arc", subset)] = datasets.DatasetDict(
        train=arc_hub_split(splits["Train"]), validation=arc_hub_split(splits["Dev"]), test=arc_hub_split(splits["Test"]))
    spec = InputSpec(kind="text", tokenizer=gpt2_like_tokenizer, max_length=40)
    local = build_data(DataConfig(name=name, root=str(tmp_path / "local"), max_train=12), spec)
    from_hub = build_data(DataConfig(name=name, root=str(tmp_path / "none"), max_train=12), spec)
    assert hub.calls == [("allenai/ai2_arc", subset)]
    assert_same_examples(local, from_hub)
    assert from_hub.metadata["dropped"] == {"train": 1, "dev": 0, "test": 1} and from_hub.metadata["val_source"] == "dev"
    assert local.record()["source"]["files"] == {s: f"{subset}-{s}.jsonl" for s in ("Train", "Dev", "Test")}
    src = from_hub.record()["source"]
    assert (src["kind"], src["hub_id"], src["config"], src["revision"]) == ("hub", "allenai/ai2_arc", subset, None)


def test_partial_local_files_are_an_error_not_a_download(tmp_path, hub, minilm_tokenizer, arc_writer, gpt2_like_tokenizer):
    (tmp_path / "MRPC").mkdir()
    (tmp_path / "MRPC" / "train.tsv").write_text("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n")
    with pytest.raises(FileNotFoundError, match=r"MRPC lacks dev\.tsv"):
        build_data(DataConfig(name="mrpc", root=str(tmp_path)), InputSpec(kind="text", tokenizer=minilm_tokenizer))
    arc_question, write_arc = arc_writer
    write_arc(tmp_path / "ARC-Easy", "Train", [arc_question(0)])
    with pytest.raises(FileNotFoundError, match=r"lacks ARC-Easy-Test\.jsonl"):
        build_data(DataConfig(name="arc_easy", root=str(tmp_path)), InputSpec(kind="text", tokenizer=gpt2_like_tokenizer))
    assert hub.calls == []


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and isinstance(err.value, FileNotFoundError)
    return msg


def test_offline_with_nothing_cached_names_id_config_and_expected_files(tmp_path, minilm_tokenizer, gpt2_like_tokenizer,
                                                                       monkeypatch):
    """The real ``datasets.load_dataset``, offline (the suite's HF_HUB_OFFLINE=1), with an empty cache."""
    with pytest.raises(HubError) as err:
        build_data(DataConfig(name="mrpc", root=str(tmp_path)), InputSpec(kind="text", tokenizer=minilm_tokenizer))
    msg = one_line(err)
    for part in ("'nyu-mll/glue' (config 'mrpc')", f"data.root={str(tmp_path)!r}", "MRPC/{train.tsv,dev.tsv}",
                 "HF_HUB_OFFLINE=1", datasets.config.HF_DATASETS_CACHE.name):
        assert part in msg, part
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "true")   # echoed as set, not as "=1"
    with pytest.raises(HubError) as err:
        build_data(DataConfig(name="arc_challenge", root=str(tmp_path)), InputSpec(kind="text", tokenizer=gpt2_like_tokenizer))
    msg = one_line(err)
    for part in ("'allenai/ai2_arc' (config 'ARC-Challenge')", "ARC-Challenge-Train.jsonl", "HF_DATASETS_OFFLINE=true"):
        assert part in msg, part


def test_failed_download_is_one_line_naming_the_dataset(tmp_path, minilm_tokenizer, monkeypatch, hub_reachable):
    def unreachable(path, name=None, **kw):  # what datasets raises without network
        raise ConnectionError(f"Couldn't reach '{path}' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(HubError) as err:
        build_data(DataConfig(name="mrpc", root=str(tmp_path)), InputSpec(kind="text", tokenizer=minilm_tokenizer))
    msg = one_line(err)
    assert "'nyu-mll/glue' (config 'mrpc')" in msg and "failed (ConnectionError: Couldn't reach" in msg


def test_metrics_json_records_the_source(tmp_path, hub, mrpc_root):
    """A training run from the hub copy records the dataset id in metrics.json (data.source)."""
    from bayespeft.config import validate
    from bayespeft.experiments.train import train_model
    from bayespeft.models.tiny import TINY

    root, rows = mrpc_root
    hub.served[("nyu-mll/glue", "mrpc")] = datasets.DatasetDict(train=mrpc_split(rows["train"]),
                                                               validation=mrpc_split(rows["dev"]))
    from bayespeft.assets import find_minilm_dir

    cfg = validate({"name": "hub-mrpc", "model": {"name": "hf_text", "pretrained": False, "tokenizer": str(find_minilm_dir()),
                                                  **TINY["hf_text"]},
                    "adapter": {"method": "lora", "r": 2}, "data": {"name": "mrpc", "root": str(tmp_path / "none")},
                    "train": {"epochs": 1}, "output": {"root": str(tmp_path / "runs")}})
    run = train_model(cfg)
    metrics = json.loads((Path(run.run_dir) / "metrics.json").read_text())
    assert metrics["data"]["source"]["hub_id"] == "nyu-mll/glue" and metrics["data"]["test_tsv"] == "absent"


def write_prepared_cache(cache: Path, dataset_name: str, config: str, features: datasets.Features,
                         splits: dict[str, datasets.Dataset]) -> None:
    """What ``datasets`` leaves after preparing ``nyu-mll/glue`` (config ``mrpc``) once:
    ``<cache>/nyu-mll___glue/mrpc/0.0.0/<commit>/{glue-<split>.arrow, dataset_info.json}``."""
    from datasets.arrow_writer import ArrowWriter

    d = cache / "nyu-mll___glue" / config / "0.0.0" / COMMIT
    d.mkdir(parents=True)
    infos = datasets.SplitDict(dataset_name=dataset_name)
    for split, ds in splits.items():
        with ArrowWriter(features=features, path=str(d / f"{dataset_name}-{split}.arrow")) as w:
            w.write_table(ds.data.table)
            n, nbytes = w.finalize()
        infos.add(datasets.SplitInfo(name=split, num_examples=n, num_bytes=nbytes, dataset_name=dataset_name))
    datasets.DatasetInfo(features=features, splits=infos, config_name=config, dataset_name=dataset_name,
                         version="0.0.0").write_to_directory(str(d))


def test_unreachable_hub_reads_the_datasets_cache_or_names_the_cause(tmp_path, mrpc_root, minilm_tokenizer,
                                                                     hub_unreachable, monkeypatch, caplog):
    """The real ``load_dataset`` with the hub unreachable: not cached -> one line with the cause and the fix; cached
    -> the same examples as the local TSVs, and only the probe was sent."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    spec = InputSpec(kind="text", tokenizer=minilm_tokenizer, max_length=24)
    settings = dict(name="mrpc", max_train=40, max_test=10, split_seed=3)
    with pytest.raises(HubError) as err:
        build_data(DataConfig(root=str(tmp_path / "empty"), **settings), spec)
    msg = one_line(err)
    for part in ("'nyu-mll/glue' (config 'mrpc') cannot be downloaded", "MRPC/{train.tsv,dev.tsv}",
                 f"the hub {hub_unreachable.endpoint} cannot be reached (ConnectError: ", str(tmp_path / "cache"),
                 "set HF_HUB_OFFLINE=1 to read only the cache"):
        assert part in msg, part
    assert datasets.config.HF_HUB_OFFLINE is False  # datasets' offline mode was for that one call only
    root, rows = mrpc_root
    write_prepared_cache(tmp_path / "cache", "glue", "mrpc", MRPC_FEATURES,
                         {"train": mrpc_split(rows["train"]), "validation": mrpc_split(rows["dev"]),
                          "test": mrpc_split(rows["dev"][:3], labelled=False)})
    caplog.clear()
    with caplog.at_level("WARNING", logger="bayespeft.data"):
        from_cache = build_data(DataConfig(root=str(tmp_path / "empty"), **settings), spec)
    said = {r.getMessage() for r in caplog.records
            if r.name == "bayespeft.data" and "cannot be reached" in r.getMessage()}
    assert len(said) == 1, said  # why the cache alone is read (datasets' own line says "offline mode is enabled")
    line = said.pop()
    assert line.startswith(f"mrpc: the Hugging Face hub {hub_unreachable.endpoint} cannot be reached (ConnectError: ")
    assert line.endswith(f"); reading 'nyu-mll/glue' (config 'mrpc') from the datasets cache {tmp_path / 'cache'} only")
    assert_same_examples(build_data(DataConfig(root=str(root), **settings), spec), from_cache)
    assert from_cache.record()["source"]["revision"] == COMMIT
    assert datasets.config.HF_HUB_OFFLINE is False
    assert hub_unreachable.requests == [f"HEAD {hub_unreachable.endpoint}"], hub_unreachable.requests
