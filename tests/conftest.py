"""Suite-wide settings: offline Hugging Face, one torch thread (tiny models; the CI machine has 2 shared cores),
quiet progress bars, private cache directories (the quickstart's upstream checkpoint, `datasets`), and the
`accelerator` fixture (a GPU, or the virtual accelerator of tests/virtual_device.py on a CPU-only machine)."""

import os
import shutil
import sys
import tempfile

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("BAYESPEFT_PROGRESS", "0")
os.environ.setdefault("MPLBACKEND", "Agg")

# one cache for the whole session: the quickstart's upstream backbone is made once by the first test needing it
_CACHE = tempfile.mkdtemp(prefix="bayespeft-test-cache-")
os.environ["BAYESPEFT_CACHE"] = _CACHE
# and an empty `datasets` cache: a GLUE/ARC copy cached on this machine must not stand in for the hub in a test
os.environ["HF_DATASETS_CACHE"] = os.path.join(_CACHE, "hf-datasets")

import torch  # noqa: E402

torch.set_num_threads(1)

sys.path.insert(0, os.path.dirname(__file__))
from hub_net import hub_reachable, hub_unreachable  # noqa: E402,F401  (fixtures)
from virtual_device import DEVICE, VirtualAccelerator  # noqa: E402


@pytest.fixture
def accelerator():
    """The device of a test that must run as on a GPU: CUDA when there is one, else the virtual accelerator of
    ``tests/virtual_device.py`` (real CPU values, GPU device checks), active for the whole test."""
    if torch.cuda.is_available():
        yield torch.device("cuda")
        return
    with VirtualAccelerator():
        yield DEVICE


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_CACHE, ignore_errors=True)
