"""Shared test settings."""

import torch

# The tests use small tensors: one thread is as fast as two, and far faster when the two
# cores are shared with other processes (oversubscribed OpenMP threads spin).
torch.set_num_threads(1)
