"""Seeds of the tasks' generators, derived from ``(seed, split, epoch, batch index, ...)``."""

from __future__ import annotations


def derive_seed(*parts: int) -> int:
    """A 63-bit seed mixed from ``parts`` (an LCG step per part): the same parts, the same seed."""
    s = 0x9E3779B97F4A7C15
    for p in parts:
        s = (s * 6364136223846793005 + (p & 0xFFFFFFFF) + 1442695040888963407) & ((1 << 63) - 1)
    return s
