"""Suite-wide settings: offline Hugging Face, one torch thread (tiny models; the CI machine has 2 shared cores),
quiet progress bars, and a private cache directory for the quickstart's upstream checkpoint."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("BAYESPEFT_PROGRESS", "0")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

torch.set_num_threads(1)
