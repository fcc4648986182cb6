"""Griffe extension of the docs build: two reST habits of the docstrings, made Markdown.

- A rule's "(plus the options shared by every rule ...)" note at the end of its ``Args:``
  section becomes a paragraph after the section (Google-style parsing would read it as a
  parameter named "(plus the options ..."; the docstrings keep it there for ``help()``).
- Sphinx roles (``:class:`~chronograd.rules.LearningRule```) become inline code with the name
  as written (``LearningRule`` for a ``~`` path).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):`(~?)([^`]+)`")


def roles_to_code(text: str) -> str:
    """``text`` with every Sphinx role replaced by inline code of its target."""
    return ROLE.sub(lambda m: f"`{m.group(2).split('.')[-1] if m.group(1) else m.group(2)}`", text)


def move_plus_note(text: str) -> str:
    """``text`` with an ``Args:`` item starting with ``(plus`` moved after the section."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if not line.lstrip().startswith("(plus"):
            continue
        indent = len(line) - len(line.lstrip())
        j = i + 1
        while (
            j < len(lines) and lines[j].strip() and len(lines[j]) - len(lines[j].lstrip()) > indent
        ):
            j += 1
        note = " ".join(s.strip() for s in lines[i:j])
        rest = lines[:i] + lines[j:]
        note = note[1:-1].strip()  # without the parentheses
        return "\n".join(rest).rstrip() + "\n\n" + note[:1].upper() + note[1:] + "."
    return text


class SharedOptionsNote(griffe.Extension):
    """Apply :func:`move_plus_note` and :func:`roles_to_code` to every docstring."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        """Rewrite ``obj``'s docstring."""
        if obj.docstring is not None:
            obj.docstring.value = roles_to_code(move_plus_note(obj.docstring.value))
