"""Config loading: validation messages, base inheritance, --set overrides."""

from __future__ import annotations

import textwrap

import pytest

from bayespeft.adapters import AdapterConfig
from bayespeft.config import ConfigError, apply_overrides, dump_config, load_config, read_yaml

BASE = textwrap.dedent(
    """
    name: tiny
    data: {name: digits, max_train: 64}
    model: {name: micro_vit, pretrained: false}
    adapter: {method: lora, r: 4}
    train: {epochs: 1, lr: 0.01}
    """
)


def write(tmp_path, text, name="exp.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_valid_config_round_trips(tmp_path):
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.adapter.method == "lora" and cfg.adapter.r == 4 and cfg.train.lr == 0.01
    again = load_config(write(tmp_path, dump_config(cfg), "dumped.yaml"))
    assert again == cfg


def test_unknown_key_names_key_and_closest(tmp_path):
    p = write(tmp_path, BASE.replace("lr: 0.01", "lrr: 0.01"))
    with pytest.raises(ConfigError, match=r"unknown key 'train\.lrr' \(did you mean 'train\.lr'\?\)"):
        load_config(p)


def test_unknown_top_level_section(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'adaptr'.*did you mean 'adapter'"):
        load_config(write(tmp_path, BASE + "adaptr: {}\n"))


@pytest.mark.parametrize(
    "override, pattern",
    [
        ("adapter.r=0", r"adapter\.r"),
        ("train.lr=-1", r"train\.lr"),
        ("adapter.method=lorax", r"adapter\.method.*(lora|normtune)"),
    ],
)
def test_bad_values_say_what_is_allowed(tmp_path, override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(write(tmp_path, BASE), [override])


def test_set_overrides_parse_yaml_values(tmp_path):
    cfg = load_config(write(tmp_path, BASE), ["train.lr=3e-4", "adapter.r=16", "adapter.target_modules=[qkv]"])
    assert cfg.train.lr == pytest.approx(3e-4) and cfg.adapter.r == 16 and cfg.adapter.target_modules == ["qkv"]
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides({}, ["train.lr"])


def test_base_inheritance_deep_merges(tmp_path):
    write(tmp_path, BASE, "defaults.yaml")
    child = write(tmp_path, "base: defaults.yaml\nadapter: {r: 8}\n", "child.yaml")
    raw = read_yaml(child)
    assert raw["adapter"] == {"method": "lora", "r": 8} and raw["train"]["lr"] == 0.01
    write(tmp_path, "base: loop2.yaml\n", "loop1.yaml")
    write(tmp_path, "base: loop1.yaml\n", "loop2.yaml")
    with pytest.raises(ConfigError, match="circular"):
        read_yaml(tmp_path / "loop1.yaml")


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "data: [unclosed\n"))


def test_adapter_option_the_method_does_not_read_is_one_line_naming_both(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, BASE), ["adapter.method=full"])
    assert str(e.value).splitlines()[1:] == [
        "  - adapter.r: applies to hybrid and lora only; remove it (or set it to null) for method 'full' (got 4)"]
    assert load_config(write(tmp_path, BASE), ["adapter.method=full", "adapter.r=null"]).adapter == AdapterConfig(method="full")
    cfg = load_config(write(tmp_path, BASE.replace("method: lora, r: 4", "method: full")))
    assert load_config(write(tmp_path, dump_config(cfg), "dumped.yaml")) == cfg  # a run's config.yaml loads again


def test_unreadable_config_files_are_one_line_errors(tmp_path):
    """A YAML syntax error, a non-UTF-8 file and a directory: one line naming the file and what to do."""
    import pytest

    from bayespeft.config import ConfigError, load_config

    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  name: digits\n   model: [\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML at line \d+, column \d+: ") as e:
        load_config(bad)
    assert "\n" not in str(e.value)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"latin\.yaml: not a UTF-8 text file \(byte 9\); save it as UTF-8"):
        load_config(latin)
    with pytest.raises(ConfigError, match=r"is a directory; pass a config file"):
        load_config(tmp_path)


def test_duplicate_yaml_key_is_a_one_line_error_naming_both_lines(tmp_path):
    """YAML keeps the last of two equal keys silently; a config with ``epochs`` twice is refused, in any section."""
    dup = write(tmp_path, "train:\n  epochs: 2\n  lr: 0.1\n  epochs: 3\n", "dup.yaml")
    with pytest.raises(ConfigError) as e:
        load_config(dup)
    assert str(e.value) == (f"{dup.resolve()}: not valid YAML at line 4, column 3: "
                            "duplicate key 'epochs' (first at line 2); keep only one")
    assert read_yaml(write(tmp_path, "train:\n  epochs: 2\nadapter:\n  epochs: 3\n", "ok.yaml"))["train"] == {"epochs": 2}


def test_booleans_and_whole_floats_are_not_silently_made_numbers(tmp_path, capsys):
    """pydantic's lax mode read ``--set train.epochs=true`` as 1 and ``train.seed=1.0`` as 1; each is one line naming
    the key and what it takes, while strings, ints for float fields, null and lists keep loading."""
    from bayespeft.cli import main

    cfg = write(tmp_path, BASE)
    bad = ["train.epochs=true", "train.lr=true", "data.batch_size=yes", "train.seed=1.0", "data.max_train=64.0"]
    assert main(["validate", str(cfg), *[a for s in bad for a in ("--set", s)]]) == 2
    err = capsys.readouterr().err
    assert "- train.epochs: must be an integer, not a boolean" in err and "(got True)" in err
    assert "- train.lr: must be a number, not a boolean" in err
    assert "- data.batch_size: must be an integer, not a boolean" in err
    assert "- train.seed: must be an integer, e.g. 1 (not 1.0)" in err
    assert "- data.max_train: must be an integer, e.g. 64 (not 64.0)" in err
    with pytest.raises(ConfigError, match=r"train\.epochs: must be an integer, not a boolean"):
        load_config(write(tmp_path, BASE.replace("epochs: 1", "epochs: yes"), "yes.yaml"))
    ok = load_config(cfg, ["train.lr=1", "train.epochs=2", "data.max_train=null", "data.root=/tmp/d",
                           "adapter.target_modules=[qkv]"])
    assert ok.train.lr == 1.0 and isinstance(ok.train.lr, float) and ok.train.epochs == 2
    assert ok.data.max_train is None and str(ok.data.root) == "/tmp/d"


def test_number_type_check_walks_unions_lists_and_dicts():
    from typing import Literal

    from bayespeft.section import check_number_type

    for value, ann in [(True, int | None), ([0.5, True], float | list[float]), ({"a": False}, dict[str, float]),
                       (2.0, int | None), ((1, 2.0), tuple[int, ...])]:
        with pytest.raises(ValueError, match="must be"):
            check_number_type(value, ann)
    for value, ann in [(True, bool), (True, bool | int), (1, float), (1.5, float | Literal["marglik"]),
                       ("marglik", float | Literal["marglik"]), ([1, 2], list[float]), (None, int | None)]:
        check_number_type(value, ann)


def test_missing_base_names_the_file_whose_base_points_there(tmp_path, capsys):
    from bayespeft.cli import main

    child = write(tmp_path, "base: nothere.yaml\nname: x\n", "child.yaml")
    assert main(["validate", str(child)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{child}: base: nothere.yaml names a config file that does not exist ({tmp_path / 'nothere.yaml'})" in err
    write(tmp_path, "base: [child.yaml]\n", "grandchild.yaml")  # the error names the file one level down
    with pytest.raises(ConfigError, match=rf"^{child}: base: nothere\.yaml names"):
        read_yaml(tmp_path / "grandchild.yaml")


def test_empty_file_and_empty_sections_say_so(tmp_path):
    with pytest.raises(ConfigError, match=r"empty.yaml is empty; a config needs at least the data, model and adapter "
                                          r"sections \(start from one under configs/"):
        load_config(write(tmp_path, "", "empty.yaml"))
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE.replace("train: {epochs: 1, lr: 0.01}", "train:")))
    assert str(err.value).splitlines()[1:] == [
        "  - train: the section is empty; give its keys (`bayespeft config train` lists them) or delete the line"]
    with pytest.raises(ConfigError) as err:  # a required section cannot be deleted
        load_config(write(tmp_path, BASE.replace("data: {name: digits, max_train: 64}", "data:")))
    assert "  - data: the section is empty; give its keys (`bayespeft config data` lists them)" in str(err.value)
    assert "delete the line" not in str(err.value)
    assert load_config(write(tmp_path, ""), ["data.name=digits", "model.name=micro_vit", "adapter.method=lora"])
