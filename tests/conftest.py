"""Suite-wide settings: offline Hugging Face, one torch thread (tiny models; the CI machine has 2 shared cores),
quiet progress bars, and private cache directories (the quickstart's upstream checkpoint, `datasets`)."""

import os
import shutil
import tempfile

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


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_CACHE, ignore_errors=True)
