"""Run directories and the append-only results CSV."""

from __future__ import annotations

import pytest

from bayespeft.errors import RunError
from bayespeft.experiments.records import RESULT_COLUMNS, append_result, append_results, new_run_dir, read_results
from bayespeft.registry import Registry, UnknownNameError


def test_append_only_csv_keeps_rows_and_header(tmp_path):
    csv = tmp_path / "r" / "results.csv"
    append_result(csv, {"method": "lora", "acc@1": 0.5, "ece": 0.1})
    append_result(csv, {"method": "full", "acc@1": 0.75})
    df = read_results(csv)
    assert list(df.columns) == RESULT_COLUMNS
    assert df["method"].tolist() == ["lora", "full"] and df["acc@1"].tolist() == [0.5, 0.75]
    with pytest.raises(ValueError, match="unknown result columns"):
        append_result(csv, {"acc": 1.0})
    bad = tmp_path / "other.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(RunError, match="another header"):
        append_result(bad, {"method": "lora"})
    assert bad.read_text() == "a,b\n1,2\n"


def test_rows_with_a_recorded_result_key_are_skipped_and_the_first_kept(tmp_path):
    csv = tmp_path / "results.csv"
    first = {"method": "lora", "acc@1": 0.5, "result_key": "k1", "run": "a"}
    assert append_result(csv, first)
    appended, skipped = append_results(csv, [{"method": "lora", "acc@1": 0.9, "result_key": "k1", "run": "b"},
                                             {"method": "lora", "acc@1": 0.7, "result_key": "k2", "run": "b"},
                                             {"method": "lora", "acc@1": 0.7, "result_key": "k2", "run": "b"},
                                             {"method": "full", "acc@1": 0.1, "run": "b"},
                                             {"method": "full", "acc@1": 0.1, "run": "b"}])
    assert [r["result_key"] for r in skipped] == ["k1", "k2"] and skipped[0]["run"] == "a"
    df = read_results(csv)
    assert df["run"].tolist() == ["a", "b", "b", "b"] and df["acc@1"].tolist() == [0.5, 0.7, 0.1, 0.1]


def test_run_dirs_are_fresh(tmp_path):
    a, b = new_run_dir(tmp_path, "x"), new_run_dir(tmp_path, "x")
    assert a != b and a.is_dir() and b.is_dir()


def test_registry_lists_names_and_rejects_duplicates():
    reg: Registry[int] = Registry("widget")
    reg.register("alpha", 1)
    reg.register("beta")(2)
    with pytest.raises(UnknownNameError, match=r"unknown widget 'alpah'. Did you mean 'alpha'\? Known widgets: alpha, beta"):
        reg.get("alpah")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("alpha", 3)


@pytest.mark.parametrize("tail, why", [(b"x\xff,1\n", "not UTF-8 at byte"),
                                       (b'"lora,0.5\n', "CSV error: unexpected end of data")])
def test_an_unreadable_results_csv_is_a_run_error_before_and_at_append(tmp_path, tail, why):
    """A results CSV with the right header but bytes that are not UTF-8, or an unterminated quote (rows appended
    after it would be swallowed into the quoted field), is refused naming the file and the fix; nothing is written."""
    from bayespeft.experiments.records import check_results_csv

    bad = tmp_path / "results.csv"
    content = (",".join(RESULT_COLUMNS) + "\n").encode() + tail
    bad.write_bytes(content)
    for call in (lambda: check_results_csv(bad), lambda: append_result(bad, {"method": "lora", "result_key": "k"})):
        with pytest.raises(RunError, match=f"results CSV {bad} is not a readable UTF-8 CSV file .{why}.*results_csv"):
            call()
    assert bad.read_bytes() == content
