"""The subcommand registry and option parsing of the command line.

Shared by :mod:`chronograd.cli` (which registers ``train`` and ``tasks`` and runs ``main``) and
the modules that implement other subcommands (:mod:`chronograd.comparison.commands`), so that
neither imports the other's module for them.
"""

from __future__ import annotations

import argparse
import ast
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

Command = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Command]] = {}


def command(
    name: str, setup: Callable[[argparse.ArgumentParser], None]
) -> Callable[[Command], Command]:
    """Register a subcommand (other modules add theirs the same way)."""

    def deco(fn: Command) -> Command:
        COMMANDS[name] = (setup, fn)
        return fn

    return deco


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``["k=3", "name=adam"]`` -> ``{"k": 3, "name": "adam"}`` (Python literals, else strings)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"option {pair!r} must look like key=value")
        k, v = pair.split("=", 1)
        try:
            out[k.strip()] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k.strip()] = v
    return out


def check_device(spec: str) -> Any:
    """``--device`` as a ``torch.device``, refused with the fix when it does not exist here."""
    import torch

    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(
            f"--device must name a torch device such as cpu, cuda, cuda:0 or mps, got {spec!r}"
        ) from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(
                f"--device {spec} asks for a GPU but this PyTorch sees none "
                f"(torch {torch.__version__}); use --device cpu or install a CUDA build"
            )
        if dev.index is not None and dev.index >= count:
            raise ValueError(
                f"--device {spec}: there are {count} CUDA device(s), indices 0..{count - 1}; "
                f"pick one of them (e.g. --device cuda:0)"
            )
    elif dev.type == "mps" and not (
        hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    ):
        raise ValueError(f"--device {spec}: MPS is not available here; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device must be cpu, cuda[:N] or mps, got {spec!r}")
    return dev


def check_int(flag: str, value: int | None, least: int = 1) -> None:
    """Refuse an integer option below ``least`` (None: not given, the default applies)."""
    if value is not None and value < least:
        raise ValueError(f"{flag} must be an integer >= {least}, got {value}")


def check_positive_float(flag: str, value: float | None) -> None:
    """Refuse a float option that is not a finite number > 0 (None: not given)."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ValueError(f"{flag} must be a finite number > 0, got {value}")


def check_out_dir(flag: str, path: str | None) -> None:
    """Refuse an output directory that names an existing file."""
    if path is not None and os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(
            f"{flag} must be a directory, but {path} is an existing file; pass a new or "
            "existing directory (e.g. --out runs/my_run)"
        )
