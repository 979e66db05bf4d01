"""``data.download=true`` for CIFAR with the network replaced at its boundary (``urllib.request.urlopen``): a failed
download, an md5 mismatch and a truncated archive each end in one clean line naming the file and what to do, and
an archive served intact is checked, extracted and loaded."""

from __future__ import annotations

import io
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from bayespeft.cli import main
from bayespeft.data import DataConfig, build_data
from bayespeft.data import cifar as cifar_mod
from bayespeft.errors import USER_ERRORS, DataError
from bayespeft.inputs import InputSpec
from bayespeft.testing import write_cifar10

SPEC = InputSpec(kind="image", image_size=32, in_chans=3, mean=(0.5,) * 3, std=(0.25,) * 3)
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


def cifar10_archive(tmp: Path) -> bytes:
    """A ``cifar-10-python.tar.gz`` in the official layout (the files of :func:`write_cifar10`)."""
    write_cifar10(tmp)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(tmp / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return buf.getvalue()


class FakeResponse:
    """What ``urllib.request.urlopen`` returns, serving ``payload`` for ``url``."""

    def __init__(self, url: str, payload: bytes) -> None:
        self.url, self._body, self.length = url, io.BytesIO(payload), len(payload)

    def read(self, n: int = -1) -> bytes:
        return self._body.read(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


@pytest.fixture()
def network(monkeypatch):
    """``network(payload)`` serves ``payload`` for every URL; ``network(None)`` makes every request fail."""
    calls: list[str] = []

    def install(payload: bytes | None):
        def urlopen(req, *a, **kw):
            url = req.full_url if isinstance(req, urllib.request.Request) else str(req)
            calls.append(url)
            if payload is None:
                raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
            return FakeResponse(url, payload)

        monkeypatch.setattr(urllib.request, "urlopen", urlopen)
        return calls

    return install


def one_line(msg: str) -> None:
    assert "\n" not in msg and "Traceback" not in msg, msg


def test_failed_download_is_one_line_naming_the_url_file_and_what_to_do(tmp_path, network):
    calls = network(None)
    with pytest.raises(DataError) as e:
        build_data(DataConfig(name="cifar10", root=str(tmp_path), download=True), SPEC)
    msg = str(e.value)
    one_line(msg)
    assert URL in msg and str(tmp_path / "cifar-10-python.tar.gz") in msg and "network" in msg
    assert "data.download=false" in msg  # the offline alternative
    assert calls and not (tmp_path / "cifar-10-python.tar.gz").exists()  # no partial file left behind
    assert isinstance(e.value, USER_ERRORS)


def test_failed_download_through_the_cli_exits_2_with_one_line(tmp_path, network, capsys):
    network(None)
    code = main(["train", str(CONFIGS / "tiny" / "cifar10_resnet18_sgld.yaml"), "--set", f"data.root={tmp_path}",
                 "--set", "data.download=true", "--set", f"output.root={tmp_path / 'runs'}"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "cifar-10-python.tar.gz" in err and "Traceback" not in err


def test_md5_mismatch_of_the_archive_names_it_and_says_delete(tmp_path, network):
    payload = cifar10_archive(tmp_path / "src")  # a well-formed archive, but not the official bytes
    network(payload)
    root = tmp_path / "data"
    with pytest.raises(DataError) as e:
        build_data(DataConfig(name="cifar10", root=str(root), download=True), SPEC)
    msg = str(e.value)
    one_line(msg)
    archive = root / "cifar-10-python.tar.gz"
    assert archive.read_bytes() == payload  # kept so the user can look at it
    assert str(archive) in msg and "md5" in msg and cifar_mod.CheckedCIFAR10.tgz_md5 in msg and "delete" in msg


def test_truncated_archive_is_reported_with_and_without_md5(tmp_path, network):
    payload = cifar10_archive(tmp_path / "src")[:3000]
    network(payload)
    checked = tmp_path / "checked"
    with pytest.raises(DataError) as e:  # md5 on: the size tells it is truncated
        build_data(DataConfig(name="cifar10", root=str(checked), download=True), SPEC)
    one_line(str(e.value))
    assert str(checked / "cifar-10-python.tar.gz") in str(e.value) and "truncated" in str(e.value)
    assert f"{len(payload):,} of {cifar_mod.ARCHIVE_BYTES['cifar10']:,} bytes" in str(e.value)
    unchecked = tmp_path / "unchecked"
    with pytest.raises(DataError) as e:  # md5 off: extraction finds the truncation
        build_data(DataConfig(name="cifar10", root=str(unchecked), download=True, verify_checksums=False), SPEC)
    one_line(str(e.value))
    assert str(unchecked / "cifar-10-python.tar.gz") in str(e.value) and "truncated or corrupt" in str(e.value)
    assert "delete" in str(e.value)


def test_an_intact_download_is_extracted_and_loaded_once(tmp_path, network):
    calls = network(cifar10_archive(tmp_path / "src"))
    root = tmp_path / "data"
    cfg = DataConfig(name="cifar10", root=str(root), download=True, verify_checksums=False)
    b = build_data(cfg, SPEC)
    assert (len(b.train) + len(b.val), len(b.test)) == (100, 20)
    n = len(calls)
    assert n >= 1 and all(c == URL for c in calls)
    build_data(cfg, SPEC)  # files present: nothing fetched again
    assert len(calls) == n


def test_extracted_files_with_a_bad_md5_are_a_user_error(tmp_path):
    write_cifar10(tmp_path)
    with pytest.raises(DataError, match=r"md5 of .*data_batch_1.*does not match"):
        build_data(DataConfig(name="cifar10", root=str(tmp_path)), SPEC)


@pytest.mark.parametrize("path", sorted((CONFIGS / "tiny").glob("cifar*.yaml")), ids=lambda p: p.name)
def test_tiny_cifar_configs_never_download(path):
    from bayespeft.config import load_config

    assert load_config(path).data.download is False
