"""Sweep files: expansion (axes, exclusions, cases, method options), run ids, and every sweep-level error."""

import itertools

import pytest

from bayespeft.experiments.sweep.expand import expand
from bayespeft.experiments.sweep.spec import SweepError, load_sweep

GRID = """\
base: base.yaml
axes:
  adapter.method: [lora, full, hybrid]
  adapter.r: [2, 4, 8]
  train.seed: [1, 2]
cases:
  - when: {adapter.method: [lora, hybrid]}
    set: {adapter.alpha: "${2 * adapter.r}", adapter.dropout: 0.1}
  - when: {adapter.method: hybrid}
    set: {adapter.r: 16}
exclude:
  - {adapter.method: lora, adapter.r: 8, train.seed: 2}
stages: [train, evaluate, {laplace: {structure: kfac}}]
"""


def with_case(text):
    """GRID with one more case (after the two it has)."""
    return GRID.replace("exclude:", text + "exclude:")


def test_grid_expansion_matches_brute_force(sweep_file):
    plan = expand(load_sweep(sweep_file(GRID)))
    # brute force, written independently: what each combination must resolve to
    expected = set()
    for method, r, seed in itertools.product(["lora", "full", "hybrid"], [2, 4, 8], [1, 2]):
        if (method, r, seed) == ("lora", 8, 2):
            continue
        if method == "full":
            expected.add((method, None, None, None, seed))
        else:
            rank = 16 if method == "hybrid" else r
            expected.add((method, rank, 2.0 * rank, 0.1, seed))
    got = {(r.config.adapter.method, r.config_json()["adapter"].get("r"), r.config_json()["adapter"].get("alpha"),
            r.config_json()["adapter"].get("dropout"), r.config.train.seed) for r in plan.runs}
    assert got == expected
    assert len(plan.runs) == len(expected) == 5 + 2 + 2
    assert plan.n_combinations == 18 and plan.n_excluded == 1
    assert sum(r.combinations for r in plan.runs) == 17  # full and hybrid: 3 ranks collapse into one run each
    assert len({r.id for r in plan.runs}) == len(plan.runs)
    assert [s.label for s in plan.spec.stages] == ["train", "evaluate", "laplace-kfac"]
    kfac = plan.runs[0].stage_configs["laplace-kfac"]
    assert kfac.laplace.structure == "kfac" and plan.runs[0].config.laplace is None


def test_run_ids_hash_the_resolved_config(sweep_file, tmp_path):
    plan = expand(load_sweep(sweep_file(GRID)))
    again = expand(load_sweep(sweep_file(GRID.replace("base: base.yaml", "base: ./base.yaml"))))
    assert [r.id for r in plan.runs] == [r.id for r in again.runs]  # same configs -> same ids
    edited = expand(load_sweep(sweep_file(GRID.replace("train.seed: [1, 2]", "train.seed: [1, 2, 3]"))))
    old = {r.id: r.config.train.seed for r in plan.runs}
    new = {r.id: r.config.train.seed for r in edited.runs}
    assert set(old) <= set(new)  # the runs the edit does not change keep their ids
    assert {new[i] for i in set(new) - set(old)} == {3} and len(new) - len(old) == 5
    lr = expand(load_sweep(sweep_file(GRID.replace("exclude:", "  - when: {train.seed: 2}\n    set: {train.lr: 0.5}\nexclude:"))))
    changed = {r.id: r.config.train.seed for r in lr.runs}
    assert {i for i in changed if i in old} == {i for i, s in old.items() if s == 1}  # only seed-2 runs changed
    staged = expand(load_sweep(sweep_file(GRID.replace("structure: kfac", "structure: diag"))))
    assert not {r.id for r in staged.runs} & set(old)  # the stages are part of the id


def test_varying_keys_and_differs(sweep_file):
    plan = expand(load_sweep(sweep_file(GRID)))
    assert plan.varying_keys() == ["adapter.method", "adapter.r", "train.seed", "adapter.alpha", "adapter.dropout"]
    full = next(r for r in plan.runs if r.config.adapter.method == "full")
    assert plan.differs(full) == {"adapter.method": "full", "adapter.r": None, "train.seed": full.config.train.seed,
                                  "adapter.alpha": None, "adapter.dropout": None}


def test_no_axes_is_one_run(sweep_file):
    plan = expand(load_sweep(sweep_file("base: base.yaml\n")))
    assert len(plan.runs) == 1 and [s.kind for s in plan.spec.stages] == ["train"]


@pytest.mark.parametrize(
    "body, messages",
    [
        ("base: base.yaml\naxes: {adapter.rank: [2, 4]}\n", ["unknown config key 'adapter.rank'", "did you mean 'adapter.r'"]),
        ("base: base.yaml\naxes: {trian.seed: [1]}\n", ["unknown config key 'trian.seed'", "did you mean 'train.seed'"]),
        ("base: base.yaml\naxes: {adapter.r: []}\n", ["'adapter.r' has no values"]),
        ("base: base.yaml\naxes: {train.seed: [0, 0, 1]}\n", ["'train.seed' lists 0 more than once", "remove the duplicate"]),
        ("base: base.yaml\naxes: {train.lr: [1.0e-4, '1e-4']}\n", ["'train.lr' lists '1e-4' more than once"]),
        ("base: base.yaml\naxes: {adapter: [1]}\n", ["'adapter' is a whole section"]),
        ("base: base.yaml\naxis: {adapter.r: [1]}\n", ["unknown sweep key 'axis'", "did you mean 'axes'"]),
        ("base: missing.yaml\n", ["base: config file not found"]),
        ("axes: {adapter.r: [1]}\n", ["base: required"]),
        ("base: base.yaml\nstages: [train, lapalce]\n", ["unknown stage 'lapalce'", "did you mean 'laplace'"]),
        ("base: base.yaml\nstages: [evaluate]\n", ["the first stage must be train"]),
        ("base: base.yaml\nstages: [train, {laplace: {structur: kfac}}]\n", ["'laplace.structur'", "'laplace.structure'"]),
        ("base: base.yaml\ncases: [{when: {adapter.method: lora}, set: {adapter.alpah: 2}}]\n", ["cases[0].set", "'adapter.alpha'"]),
        ("base: base.yaml\ncases: [{set: {adapter.alpha: '${2 * adapter.rr}'}}]\n", ["unknown config key 'adapter.rr'"]),
        ("base: base.yaml\ncases: [{set: {adapter.alpha: '${2 *}'}}]\n", ["cases[0].set.adapter.alpha", "ends too early"]),
        ("base: base.yaml\nresources: {cpus: 0}\n", ["resources: cpus must be > 0"]),
        ("base: base.yaml\nresources: {memory: lots}\n", ["memory must be a number of bytes"]),
    ],
)
def test_sweep_file_errors(sweep_file, body, messages):
    with pytest.raises(SweepError) as err:
        expand(load_sweep(sweep_file(body)))
    for m in messages:
        assert m in str(err.value)


def test_all_problems_reported_at_once(sweep_file):
    body = "base: base.yaml\naxes: {adapter.rank: [2], train.sed: [1], adapter.r: []}\n"
    with pytest.raises(SweepError) as err:
        load_sweep(sweep_file(body))
    msg = str(err.value)
    assert "adapter.rank" in msg and "train.sed" in msg and "'adapter.r' has no values" in msg


def test_case_matching_no_run(sweep_file):
    body = with_case("  - when: {adapter.method: normtune}\n    set: {train.lr: 0.1}\n")
    with pytest.raises(SweepError, match=r"case 3 \(when adapter.method=normtune\) matches no run"):
        expand(load_sweep(sweep_file(body)))


def test_exclude_matching_no_run(sweep_file):
    body = GRID.replace("train.seed: 2}", "train.seed: 7}")
    with pytest.raises(SweepError, match=r"exclude\[0\] .* matches no run"):
        expand(load_sweep(sweep_file(body)))


def test_conflicting_cases_are_named(sweep_file):
    body = with_case("  - when: {adapter.r: 4}\n    set: {adapter.dropout: 0.2}\n")
    with pytest.raises(SweepError) as err:
        expand(load_sweep(sweep_file(body)))
    msg = str(err.value)
    assert "case 1 and case 3 set adapter.dropout differently (0.1 vs 0.2)" in msg
    assert "adapter.method=lora, adapter.r=4" in msg


def test_conflicting_computed_values(sweep_file):
    body = with_case("  - when: {adapter.method: hybrid}\n    set: {adapter.alpha: '${adapter.r}'}\n")
    with pytest.raises(SweepError, match=r"case 1 and case 3 set adapter.alpha differently \(32 vs 16\)"):
        expand(load_sweep(sweep_file(body)))


def test_agreeing_cases_are_fine(sweep_file):
    body = with_case("  - when: {adapter.r: 4}\n    set: {adapter.dropout: 0.1}\n")
    assert len(expand(load_sweep(sweep_file(body))).runs) == 9


def test_explicit_option_for_a_method_that_does_not_read_it_is_a_run_error(sweep_file):
    body = "base: base.yaml\naxes: {adapter.method: [lora, full]}\ncases: [{when: {adapter.method: full}, set: {adapter.r: 4}}]\n"
    plan = expand(load_sweep(sweep_file(body)))
    (bad,) = plan.invalid
    assert bad.axes == {"adapter.method": "full"}
    assert "adapter.r" in bad.errors[0] and "applies to" in bad.errors[0]


def test_invalid_values_are_per_run(sweep_file):
    plan = expand(load_sweep(sweep_file("base: base.yaml\naxes: {adapter.r: [0, 2, 300], train.lr: [0.1, -1]}\n")))
    assert len(plan.runs) == 6
    bad = {(r.axes["adapter.r"], r.axes["train.lr"]) for r in plan.invalid}
    assert bad == {(0, 0.1), (300, 0.1), (0, -1), (2, -1), (300, -1)}
    r0 = next(r for r in plan.invalid if r.axes == {"adapter.r": 0, "train.lr": 0.1})
    assert "LoRA ranks must be >= 1" in r0.errors[0]


@pytest.mark.parametrize(
    "exclude, message",
    [
        ("  - {train.seed: 7}\n", r"exclude\[0\] \(train.seed=7\) matches no run: train.seed is never 7 \(the runs have 1, 2\)"),
        ("  - {adapter.method: full, train.seed: [5, 6]}\n", r"exclude\[0\] .* train.seed is never any of \[5, 6\]"),
        ("  - {adapter.method: full, adapter.r: 8, train.seed: 3}\n", r"train.seed is never 3 \(the runs have 1, 2\)"),
        ("  - {adapter.dropout: 0.1}\n", r"exclude\[0\] .* adapter.dropout is set by cases, which apply after exclude"),
        ("  - {adapter.rr: 2}\n", r"exclude\[0\]: unknown config key 'adapter.rr' \(did you mean 'adapter.r'\?\)"),
        ("  - {adapter.r: []}\n", r"exclude\[0\]: 'adapter.r' lists no values"),
        ("  - [adapter.r]\n", r"exclude\[0\]: an entry is a non-empty mapping .*got \['adapter.r'\]"),
    ],
)
def test_exclude_errors_name_the_entry_and_the_reason(sweep_file, exclude, message):
    body = GRID.replace("exclude:\n  - {adapter.method: lora, adapter.r: 8, train.seed: 2}\n", "exclude:\n" + exclude)
    with pytest.raises(SweepError, match=message) as err:
        expand(load_sweep(sweep_file(body)))
    assert "check its keys and values against the axes" not in str(err.value)


def test_exclude_that_is_not_a_list_says_how_to_write_it(sweep_file):
    body = "base: base.yaml\naxes: {adapter.r: [2, 4]}\nexclude: {adapter.r: 2}\n"
    with pytest.raises(SweepError, match=r"exclude: a list of mappings .* got \{'adapter.r': 2\}"):
        load_sweep(sweep_file(body))


def test_together_no_match_is_distinguished_from_a_missing_value(sweep_file):
    body = GRID.replace("train.seed: 2}", "train.seed: 2}\n  - {adapter.method: full, adapter.r: 2, train.seed: 9}")
    body = body.replace("exclude:", "  - when: {adapter.method: lora, adapter.r: 8, train.seed: 2}\n"
                        "    set: {train.lr: 0.5}\n  - when: {adapter.method: full, adapter.r: 2}\n"
                        "    set: {train.lr: 0.5}\nexclude:")
    with pytest.raises(SweepError) as err:
        expand(load_sweep(sweep_file(body)))
    msg = str(err.value)
    # case 3's only run is removed by exclude[0]: the exclude is named, not the case's keys
    assert "case 3 (when adapter.method=lora, adapter.r=8, train.seed=2) matches no run: the 1 run(s) it would " \
           "match are all excluded by exclude[0]" in msg
    # case 4: adapter.r is dropped for full fine-tuning (each key matches some run, not together)
    assert "no run has adapter.method=full and adapter.r=2 together; adapter.r is dropped from the runs whose " \
           "adapter method does not read it" in msg
    assert "exclude[1] (adapter.method=full, adapter.r=2, train.seed=9) matches no run: train.seed is never 9" in msg


def test_an_experiment_config_is_not_a_sweep_file(sweep_file, tmp_path):
    sweep_file("base: base.yaml\n")
    with pytest.raises(SweepError) as err:
        load_sweep(tmp_path / "base.yaml")
    msg = str(err.value)
    assert "\n" not in msg and "looks like an experiment config" in msg
    assert "bayespeft train" in msg and "base: base.yaml" in msg


def test_a_sweep_file_as_base_is_named(sweep_file, tmp_path):
    sweep_file("base: base.yaml\naxes: {adapter.r: [2, 4]}\n", name="inner.yaml")
    with pytest.raises(SweepError, match=r"base: inner.yaml is a sweep file \(it has axes:\), not an experiment config"):
        load_sweep(sweep_file("base: inner.yaml\naxes: {train.seed: [1]}\n", name="outer.yaml"))


@pytest.mark.parametrize("where", ["exclude: [{base: x}]", "axes: {base: [x]}", "cases: [{when: {base: x}, set: {train.lr: 0.1}}]"])
def test_base_as_a_key_needs_several_bases(sweep_file, where):
    body = "base: base.yaml\n" + ("" if where.startswith("axes") else "axes: {adapter.r: [2, 4]}\n") + where + "\n"
    with pytest.raises(SweepError, match=r"'base' is not a config key; it matches the label of a base config"):
        load_sweep(sweep_file(body))
