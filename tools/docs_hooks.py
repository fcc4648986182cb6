"""MkDocs hooks of chronograd's documentation site (``mkdocs.yml`` names this file).

- ``on_config``: checks that every public module, and every public name it defines, has a
  docstring (:func:`missing_docstrings`; the build fails otherwise), and appends one API page
  per public module to the navigation, found with :func:`pkgutil.walk_packages` (a module whose
  dotted path has a part starting with ``_`` is private), so a new module gets its page
  without anyone editing a list.
- ``on_files``: generates those API pages (a ``::: module`` directive each, rendered by
  mkdocstrings), one page per benchmark result file (``benchmarks/results/*.md`` with its
  plots, as the benchmark scripts wrote them) and the plots of the "which rule?" page, made by
  running ``chronograd compare`` on a tiny task at build time.
- ``on_page_markdown``: puts that tiny comparison's table on the "which rule?" page.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

PACKAGE = "chronograd"
API_DIR = "api"
PLOT_DIR = "generated"
BENCH_DIR = "benchmarks"
COMPARE_MARK = "<!-- compare-table -->"
_TABLE: dict[str, str] = {}

# The tiny comparison whose table and plots the "which rule?" page shows: evidence accumulation
# shortened to T = 90 steps, 8 neurons, two epochs of two batches of 4: a few seconds on one core.
COMPARE: dict[str, Any] = {
    "task": "evidence",
    "task_options": {"time_scale": 0.04, "val_batches": 1},
    "rules": "bptt,tbptt,eprop,ottt",
    "hidden": 8,
    "epochs": 2,
    "batches": 2,
    "batch_size": 4,
    "align_batch": 4,
    "memory": False,
}


def public_modules(package: str = PACKAGE) -> list[str]:
    """Every public module of ``package``, sorted (the package itself first)."""
    root = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(root.__path__, prefix=package + "."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        names.append(info.name)
    return sorted(names)


def _public_names(module: ModuleType) -> list[tuple[str, Any]]:
    """The public functions and classes ``module`` defines itself (not the ones it imports)."""
    out = []
    for name, obj in vars(module).items():
        if name.startswith("_"):
            continue
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        if getattr(obj, "__module__", None) != module.__name__:
            continue
        out.append((name, obj))
    return out


def _own_doc(obj: Any) -> str | None:
    """``obj``'s own docstring; None for none, or for one Python wrote (dataclass, NamedTuple)."""
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
    if not isinstance(doc, str) or not doc.strip():
        return None
    if inspect.isclass(obj) and "\n" not in doc and doc.startswith(obj.__name__ + "("):
        return None  # the signature dataclasses and NamedTuple put in place of a docstring
    return doc


def missing_docstrings(package: str = PACKAGE) -> list[str]:
    """Dotted names of public modules, classes, functions and methods without a docstring.

    A method counts when the class defines it and its name is public; a method overriding one
    with a docstring inherits it (as mkdocstrings shows it). Dataclass and NamedTuple members
    made by Python (``__init__``, ``_replace``) are not methods of the class's own.
    """
    missing = []
    for modname in public_modules(package):
        module = importlib.import_module(modname)
        if not (module.__doc__ or "").strip():
            missing.append(modname)
        for name, obj in _public_names(module):
            if _own_doc(obj) is None:
                missing.append(f"{modname}.{name}")
            if not inspect.isclass(obj):
                continue
            for attr, member in vars(obj).items():
                if attr.startswith("_"):
                    continue
                func = member.__func__ if isinstance(member, classmethod | staticmethod) else member
                if isinstance(func, property):
                    func = func.fget
                if not inspect.isfunction(func) or func.__module__ != module.__name__:
                    continue
                if (func.__doc__ or "").strip() or _doc_in_bases(obj, attr):
                    continue
                missing.append(f"{modname}.{name}.{attr}")
    return missing


def _doc_in_bases(cls: type, attr: str) -> bool:
    for base in cls.__mro__[1:]:
        member = base.__dict__.get(attr)
        if member is None:
            continue
        func = getattr(member, "__func__", member)
        if isinstance(func, property):
            func = func.fget
        if (getattr(func, "__doc__", None) or "").strip():
            return True
    return False


def api_page(module: str) -> str:
    """The Markdown of ``module``'s API page: its name and the mkdocstrings directive."""
    return f"# `{module}`\n\n::: {module}\n"


def api_path(module: str) -> str:
    """Where ``module``'s API page lives in the site's sources."""
    return f"{API_DIR}/{module}.md"


def benchmark_results(root: Path) -> list[Path]:
    """The result files the benchmark scripts wrote (``benchmarks/results/*.md``), sorted."""
    return sorted((root / "benchmarks" / "results").glob("*.md"))


def _root(config: Any) -> Path:
    return Path(config["config_file_path"]).resolve().parent


def on_config(config: Any) -> Any:
    from mkdocs.exceptions import PluginError

    missing = missing_docstrings()
    if missing:
        raise PluginError(
            f"{len(missing)} public names have no docstring: {', '.join(missing)}; "
            "write one (Google style: what it is, Args, Returns, shapes)"
        )
    modules = public_modules()
    nav = config["nav"]
    results = benchmark_results(_root(config))
    nav.append({"Benchmark results": [{r.stem: f"{BENCH_DIR}/{r.name}"} for r in results]})
    nav.append({"API reference": [{m: api_path(m)} for m in modules]})
    return config


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    for module in public_modules():
        files.append(File.generated(config, api_path(module), content=api_page(module)))
    results = _root(config) / "benchmarks" / "results"
    for path in sorted(results.glob("*.md")) + sorted(results.glob("*.png")):
        files.append(File.generated(config, f"{BENCH_DIR}/{path.name}", content=path.read_bytes()))
    for name, data in comparison_plots().items():
        files.append(File.generated(config, f"{PLOT_DIR}/{name}", content=data))
    return files


def unescape_table_code(markdown: str) -> str:
    """Drop the backslash of ``\\|`` inside code spans of table rows.

    GitHub needs the escape there; Python-Markdown's tables already skip pipes inside code
    spans and would print the backslash.
    """
    lines = markdown.split("\n")
    for i, line in enumerate(lines):
        if line.startswith("|") and "\\|" in line:
            parts = line.split("`")
            lines[i] = "`".join(p.replace("\\|", "|") if k % 2 else p for k, p in enumerate(parts))
    return "\n".join(lines)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Put the tiny comparison's table where a page says ``<!-- compare-table -->``, and
    unescape pipes in tables' code spans (:func:`unescape_table_code`)."""
    markdown = unescape_table_code(markdown)
    if COMPARE_MARK in markdown:
        call = ", ".join(f"{k}={v!r}" for k, v in COMPARE.items())
        table = f"`chronograd.comparison.compare({call})`\n\n" + _TABLE["md"]
        markdown = markdown.replace(COMPARE_MARK, table)
    return markdown


def comparison_plots() -> dict[str, bytes]:
    """Run the tiny comparison of :data:`COMPARE` and return its plots and table by file name."""
    from chronograd.comparison import compare

    with tempfile.TemporaryDirectory() as out:
        compare(**COMPARE, out=out, log=lambda *_: None)
        _TABLE["md"] = (Path(out) / "compare.md").read_text()
        names = ("learning_curves.png", "alignment.png")
        return {n: (Path(out) / n).read_bytes() for n in names}
