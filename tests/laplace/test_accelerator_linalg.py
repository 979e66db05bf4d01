"""The jittered Cholesky of ``bayespeft.laplace.linalg`` on an accelerator: factors and schedules stay there and equal
the CPU's (the ``accelerator`` fixture: a GPU, or the virtual accelerator of ``tests/virtual_device.py``)."""

from __future__ import annotations

import pytest
import torch

from bayespeft.laplace.linalg import jittered_cholesky, relative_jitters


def singular(d=4):
    """A ``(2, d, d)`` batch of rank ``d - 1`` shifted by ``-1e-8 I``: needs a jitter to factorise."""
    g = torch.Generator().manual_seed(0)
    B = torch.randn(2, d, d - 1, generator=g, dtype=torch.float64)
    return B @ B.transpose(1, 2) - 1e-8 * torch.eye(d, dtype=torch.float64)


@pytest.mark.parametrize("jitters", [[0.0, 1e-3], "relative"])
def test_jittered_cholesky_of_an_accelerator_matrix_equals_the_cpu(accelerator, jitters):
    M = singular()

    def schedule(m):
        return relative_jitters(m, first=1e-6, factor=10.0, tries=4) if jitters == "relative" else jitters

    with pytest.warns(RuntimeWarning, match="jitter"):
        want = jittered_cholesky(M, schedule(M), warn=True)
    with pytest.warns(RuntimeWarning, match="jitter"):
        got = jittered_cholesky(M.to(accelerator), schedule(M.to(accelerator)), warn=True)
    assert got.device.type == accelerator.type
    torch.testing.assert_close(got.cpu(), want, rtol=1e-9, atol=1e-12)
    assert not torch.equal(want @ want.transpose(1, 2), M)  # a jitter was added


def test_the_relative_schedule_adds_to_an_accelerator_diagonal_as_documented(accelerator):
    """Every entry (``0`` first) lives on the matrix's device and broadcasts to ``(..., d)`` on its diagonal."""
    M = singular()
    want = [M + torch.diag_embed(j.expand(M.shape[:-1])) for j in relative_jitters(M, 1e-6, 10.0, 3)]
    Ma = M.to(accelerator)
    got = [Ma + torch.diag_embed(j.expand(Ma.shape[:-1])) for j in relative_jitters(Ma, 1e-6, 10.0, 3)]
    assert len(got) == len(want) == 4
    for g, w in zip(got, want):
        assert g.device.type == accelerator.type
        torch.testing.assert_close(g.cpu(), w, rtol=1e-12, atol=0)
