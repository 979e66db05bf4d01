"""``bayespeft doctor``: every line OK / WARN / FAIL, exit 1 on FAIL. Failures are simulated at the boundary (the
installed distribution's metadata, the file system), the local assets are real files in temp directories, and the
smoke run is run for real once."""

from __future__ import annotations

import errno
import importlib.metadata as md
import re
from collections import namedtuple

import pytest

from bayespeft.cli import main
from bayespeft.experiments import doctor
from bayespeft.testing import write_cifar10, write_mrpc_tsv

LINE = re.compile(r"^(OK  |WARN|FAIL)  [^:]+: .+")


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Private cache directories; the smoke run must not happen unless a test asks for it."""
    monkeypatch.setenv("BAYESPEFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(doctor, "hf_cache_dir", lambda: tmp_path / "hf")

    def no_smoke():
        raise AssertionError("--quick must not run the smoke run")

    monkeypatch.setattr(doctor, "smoke_checks", no_smoke)
    return tmp_path


def doctor_lines(capsys, tmp_path, *extra) -> tuple[int, list[str]]:
    code = main(["doctor", "--quick", "--output-root", str(tmp_path / "runs"), "--data-root", str(tmp_path / "data"),
                 *extra])
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("doctor: ") and all(LINE.match(ln) for ln in out[:-1]), out
    return code, out[:-1]


def find(lines: list[str], what: str) -> str:
    (hit,) = [ln for ln in lines if ln[6:].startswith(what + ":")]
    return hit


def test_quick_run_in_a_healthy_setup(env, capsys):
    code, lines = doctor_lines(capsys, env)
    assert code == 0 and not [ln for ln in lines if ln.startswith("FAIL")]
    assert find(lines, "python").startswith("OK")
    torch_line = find(lines, "torch")
    assert torch_line.startswith("OK") and f"{md.version('torch')} (supported: " in torch_line
    assert str(env / "runs") in find(lines, "output root") and "will be created, writable" in find(lines, "output root")
    assert str(env / "cache") in find(lines, "bayespeft cache")
    assert find(lines, "threads").startswith(("OK", "WARN"))


def test_ranges_come_from_the_installed_metadata(env, capsys, monkeypatch):
    """A requirement the metadata declares (and no hand-kept list) is what is checked: a fake one shows up."""
    real = md.requires
    monkeypatch.setattr(doctor.metadata, "requires",
                        lambda d: real(d) + ["no-such-package-xyz>=1.2", 'pytest>=999; extra == "dev"'])
    code, lines = doctor_lines(capsys, env)
    assert code == 1
    assert find(lines, "no-such-package-xyz") == ("FAIL  no-such-package-xyz: not installed (required: >=1.2) -> "
                                                  "pip install 'no-such-package-xyz>=1.2'")
    # an out-of-range optional (dev) requirement is a warning, not a failure
    assert [ln for ln in lines if ln.startswith("WARN  pytest:")][0].endswith("outside the supported range >=999 "
                                                                            "(extra dev) -> pip install 'pytest>=999'")


def test_too_old_torch_and_python_fail(env, capsys, monkeypatch):
    real_version, real_meta = md.version, md.metadata
    monkeypatch.setattr(doctor.metadata, "version", lambda n: "2.0.1" if n == "torch" else real_version(n))
    monkeypatch.setattr(doctor.metadata, "metadata",
                        lambda d: {**dict(real_meta(d).items()), "Requires-Python": ">=3.99"})
    code, lines = doctor_lines(capsys, env)
    assert code == 1
    assert find(lines, "torch").startswith("FAIL  torch: 2.0.1 is outside the supported range <3,>=2.4 -> pip install")
    assert find(lines, "python").startswith("FAIL  python: ") and "(supported: >=3.99)" in find(lines, "python")


def test_unwritable_output_root_fails(env, capsys, monkeypatch):
    (env / "afile").write_text("x")
    code = main(["doctor", "--quick", "--output-root", str(env / "afile" / "runs")])
    out = capsys.readouterr().out
    assert code == 1 and f"FAIL  output root: {env / 'afile' / 'runs'}: {env / 'afile'} is not a directory" in out
    assert "--output-root" in out  # says what to do

    def denied(*a, **kw):
        raise PermissionError(errno.EACCES, "Permission denied")

    (env / "ro").mkdir()
    monkeypatch.setattr(doctor.tempfile, "mkstemp", denied)
    code, lines = doctor_lines(capsys, env, "--output-root", str(env / "ro"))
    assert code == 1
    assert find(lines, "output root") == (f"FAIL  output root: {env / 'ro'}: cannot create a file in {env / 'ro'} "
                                          "(Permission denied) -> pass a writable --output-root, or set output.root in "
                                          "the config (CLI: --set output.root=DIR)")
    assert find(lines, "bayespeft cache").startswith("FAIL")
    assert find(lines, "Hugging Face cache").startswith("WARN")  # only needed for downloads


def test_low_free_space_warns(env, capsys, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda p: usage(10 * 1024**3, 9.9 * 1024**3, 100 * 1024**2))
    code, lines = doctor_lines(capsys, env)
    assert code == 0 and "has only 0.10 GiB free" in find(lines, "output root")
    assert find(lines, "output root").startswith("WARN")


def test_local_datasets_and_weights_are_found(env, capsys):
    write_cifar10(env / "data", n_per_batch=2, n_test=2)
    (env / "data" / "MRPC").mkdir(parents=True)
    write_mrpc_tsv(env / "data" / "MRPC" / "train.tsv", 4)
    code, lines = doctor_lines(capsys, env)
    # MRPC without dev.tsv is not a usable dataset yet
    assert "present cifar10, digits; absent arc_challenge, arc_easy, cifar100, mrpc" in find(lines, "local data")
    assert "in the local hub cache: none;" in find(lines, "pretrained weights")
    assert "not cached yet" in find(lines, "quickstart upstream")

    write_mrpc_tsv(env / "data" / "MRPC" / "dev.tsv", 4)
    snap = env / "hf" / "models--roberta-base" / "snapshots" / "abc123"  # the hub cache layout
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (env / "hf" / "models--roberta-base" / "refs").mkdir()
    (env / "hf" / "models--roberta-base" / "refs" / "main").write_text("abc123")
    up = env / "cache" / "quickstart" / "micro_vit_upstream_0123.safetensors"
    up.parent.mkdir(parents=True)
    up.write_bytes(b"")
    code, lines = doctor_lines(capsys, env)
    assert "present cifar10, digits, mrpc; absent arc_challenge, arc_easy, cifar100" in find(lines, "local data")
    weights = find(lines, "pretrained weights")
    assert "in the local hub cache: roberta-base; not cached: " in weights and "phi-2" in weights.split("not cached")[1]
    assert find(lines, "quickstart upstream") == f"OK    quickstart upstream: cached: {up}"


def test_smoke_run_passes_and_a_broken_stage_is_a_fail_line(tmp_path, monkeypatch, capsys):
    lines = [c.line() for c in doctor.smoke_checks()]
    assert [ln.split(":")[0] for ln in lines] == [
        "OK    build micro ViT + LoRA, load digits", "OK    micro ViT forward/backward",
        "OK    Laplace fit (kfac, all LoRA params)", "OK    SGLD (5 steps)"], lines
    assert re.search(r"forward/backward: \d+\.\d\d s \(loss \d\.\d+, \d+ trainable tensors\)", lines[1])
    assert re.search(r"\(\d+ parameters, 64 examples\)", lines[2])

    def boom(*a, **kw):
        raise RuntimeError("cholesky failed")

    monkeypatch.setattr("bayespeft.laplace.fit", boom)
    monkeypatch.setattr(doctor, "version_checks", lambda: iter(()))
    monkeypatch.setenv("BAYESPEFT_CACHE", str(tmp_path / "cache"))
    code = doctor.run_doctor(quick=False, output_root=tmp_path / "runs", data_root=tmp_path / "data")
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL  Laplace fit (kfac, all LoRA params): RuntimeError: cholesky failed -> rerun with BAYESPEFT_DEBUG=1" in out
    assert "OK    SGLD (5 steps)" in out  # the other stages still run


def test_hub_datasets_and_weights_not_cached_warn_only_when_offline(env, capsys, monkeypatch, hub_reachable):
    """Offline, absent hub datasets and uncached weights make runs that need them fail: WARN with the fix; online
    they are downloaded on first use: OK."""
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, lines = doctor_lines(capsys, env)
    data, weights = find(lines, "local data"), find(lines, "pretrained weights")
    assert code == 0 and data.startswith("WARN") and weights.startswith("WARN")
    assert "downloads are off (HF_HUB_OFFLINE=1): a run on arc_challenge, arc_easy, mrpc fails" in data
    assert "-> put the files under the data root, or run once with network without HF_HUB_OFFLINE=1" in data
    assert "phi-2" in weights and "-> run once with network without HF_HUB_OFFLINE=1" in weights
    assert "model.tokenizer for a tokenizer only" in weights
    assert find(lines, "Hugging Face hub") == "OK    Hugging Face hub: not asked: downloads are off (HF_HUB_OFFLINE=1)"
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")  # datasets may download although the hub is offline
    assert find(doctor_lines(capsys, env)[1], "local data").startswith("OK")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    code, lines = doctor_lines(capsys, env)
    data, weights = find(lines, "local data"), find(lines, "pretrained weights")
    assert data.startswith("OK") and "loaded from the Hugging Face hub through `datasets` when absent" in data
    assert weights.startswith("OK") and "downloaded on first use when online" in weights


def test_hub_line_says_whether_the_hub_answers(env, capsys, hub_unreachable, monkeypatch):
    """Online, one probe of the endpoint (a closed local port here): unreachable is a WARN naming the endpoint, the
    cause and the fix; nothing else is sent. A hub that answers is an OK line."""
    code, lines = doctor_lines(capsys, env)
    hub = find(lines, "Hugging Face hub")
    assert code == 0 and hub.startswith("WARN") and f"{hub_unreachable.endpoint} cannot be reached (Connect" in hub
    assert "cached models and datasets load" in hub and "-> connect this machine to the hub" in hub
    assert "set HF_HUB_OFFLINE=1" in hub
    assert hub_unreachable.requests == [f"HEAD {hub_unreachable.endpoint}"]
    from bayespeft import hub_reach

    monkeypatch.setattr(hub_reach, "unreachable", lambda: None)
    hub = find(doctor_lines(capsys, env)[1], "Hugging Face hub")
    assert hub == (f"OK    Hugging Face hub: {hub_unreachable.endpoint} answers (models and datasets not cached are "
                   "downloaded on first use)")
