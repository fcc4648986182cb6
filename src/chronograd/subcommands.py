"""The subcommand registry and option parsing of the command line.

Shared by :mod:`chronograd.cli` (which registers ``train`` and ``tasks`` and runs ``main``) and
the modules that implement other subcommands (:mod:`chronograd.comparison.commands`), so that
neither imports the other's module for them.
"""

from __future__ import annotations

import argparse
import ast
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
