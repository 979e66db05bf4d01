"""``per_example`` on probabilities of every float dtype (tests/MUTATION.md, ``layerwise_study.py`` with the caches
cleared).

``per_example`` is public and documented as returning float32 ``p_true`` / ``confidence`` and a bool ``correct``
(top class = argmax, ties to the lower class) whatever the probabilities' dtype. The study itself hands it float32
probabilities (the layer-wise predictives cast before the softmax), so only a direct call reaches the other dtypes:
bf16 probabilities (a bf16 model's softmax) have no numpy dtype, so they must be cast before ``.numpy()``.
Expected values are written out by hand; every number below is exact in bf16, fp16, fp32 and fp64.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bayespeft.laplace.layerwise_study import per_example

PROBS = [[0.25, 0.75, 0.0], [0.5, 0.5, 0.0], [0.125, 0.375, 0.5], [0.0, 0.0, 1.0]]
LABELS = [1, 1, 0, 2]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_per_example_arrays_are_float32_and_bool_for_every_probability_dtype(dtype):
    out = per_example(torch.tensor(PROBS, dtype=dtype), torch.tensor(LABELS))
    assert set(out) == {"p_true", "confidence", "correct"}
    assert out["p_true"].dtype == np.float32 and out["confidence"].dtype == np.float32 and out["correct"].dtype == bool
    np.testing.assert_array_equal(out["p_true"], np.array([0.75, 0.5, 0.125, 1.0], dtype=np.float32))
    np.testing.assert_array_equal(out["confidence"], np.array([0.75, 0.5, 0.5, 1.0], dtype=np.float32))
    # row 1 ties classes 0 and 1: the lower class is the prediction, so label 1 is not correct
    np.testing.assert_array_equal(out["correct"], np.array([True, False, False, True]))
