"""Deterministic runs: the same seed gives the same run."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) generators.

    Args:
        seed: the seed.
        deterministic: also make torch use deterministic algorithms (raising on operations that
            have none) and disable cuDNN autotuning; needed for bit-identical GPU runs, slower.
            Sets ``CUBLAS_WORKSPACE_CONFIG`` as CUDA requires.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
