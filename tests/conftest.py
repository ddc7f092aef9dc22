"""Shared test settings."""

import shutil

import pytest
import torch

# The tests use small tensors: one thread is as fast as two, and far faster when the two
# cores are shared with other processes (oversubscribed OpenMP threads spin).
torch.set_num_threads(1)


@pytest.fixture
def needs_a_compiler():
    """Skip a torch.compile test where the CPU backend has no C++ compiler to call."""
    if not (shutil.which("c++") or shutil.which("g++")):
        pytest.skip("torch.compile on the CPU needs a C++ compiler; none on PATH")
