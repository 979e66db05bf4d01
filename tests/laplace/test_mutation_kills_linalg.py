"""``jittered_cholesky`` / ``relative_jitters`` defaults and edge cases (tests/MUTATION.md, third pass).

``test_linalg.py`` always passed ``what``, ``fix`` and tensor jitters; the defaults (name ``"matrix"``, no fix, no
warning), a float jitter (must be added in the matrix's dtype), an explicit zero jitter (no warning) and an empty
schedule were free to change. References: ``torch.linalg.cholesky`` of the shifted matrix written out.
"""

from __future__ import annotations

import inspect
import os
import re
import warnings

import pytest
import torch

from bayespeft.laplace.linalg import jittered_cholesky, relative_jitters

M = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)


def test_defaults_name_matrix_no_fix_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warn=False by default
        with pytest.raises(ValueError, match="^" + re.escape(
                "matrix of shape (2, 2) is not positive definite even after jitter (largest jitter tried 0.5)") + "$"):
            jittered_cholesky(-M, [0.0, 0.5])


def test_empty_schedule_is_an_error_without_a_tried_jitter():
    with pytest.raises(ValueError, match=r"^matrix of shape \(2, 2\) is not positive definite even after jitter$"):
        jittered_cholesky(M, [])


def test_float_jitter_is_added_in_the_matrix_dtype():
    chol = jittered_cholesky(torch.diag(torch.tensor([-0.05, 1.0], dtype=torch.float64)), [0.1])
    expected = torch.tensor([-0.05 + 0.1, 1.0 + 0.1], dtype=torch.float64).sqrt()  # 0.1 in float64, not float32
    torch.testing.assert_close(chol, torch.diag(expected), rtol=0, atol=1e-16)


def test_zero_jitter_does_not_warn_and_one_is_a_real_jitter():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(jittered_cholesky(M, [0.0, torch.zeros(2)], warn=True), torch.linalg.cholesky(M))
    singular = torch.zeros(2, 2, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match=r"^matrix is not positive definite; adding jitter 1 to the diagonal$"):
        assert torch.equal(jittered_cholesky(singular, [1.0], warn=True), torch.eye(2, dtype=torch.float64))


def test_first_jitter_is_zero_in_the_matrix_dtype():
    first = next(relative_jitters(M, first=1e-6, factor=10.0, tries=2))
    assert first.dtype == torch.float64 and first.shape == () and float(first) == 0.0


def _factorise_with_warning():
    return jittered_cholesky(torch.zeros(2, 2, dtype=torch.float64), [1.0], warn=True)


@pytest.mark.skipif("MUTANT_UNDER_TEST" in os.environ, reason="mutmut's trampoline adds frames between the caller "
                    "and jittered_cholesky, so the stack level cannot be checked on its mutants (tests/MUTATION.md)")
def test_warning_points_at_the_caller_of_the_function_that_factorises():
    """``stacklevel=3``: the warning names the line that called the function (e.g. ``FullStructure.cholesky``) that
    called ``jittered_cholesky``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _factorise_with_warning(); line = inspect.currentframe().f_lineno  # noqa: E702
    assert [(w.filename, w.lineno) for w in caught] == [(__file__, line)]
