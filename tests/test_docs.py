"""The documentation: every code block on its pages and in README.md runs as written (so none
can rot), every page is in the site's navigation, and every public module and name has a
docstring (the strict site build, ``make docs``, checks the rest: references, links, docstring
syntax).

A block that truly cannot run in a test (it needs torchrun, a GPU cluster, a user's file) is
marked by the line ``<!-- not run -->`` right before its fence; every other block runs, in
order, in one namespace per page.
"""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
NOT_RUN = "<!-- not run -->"
PAGES = sorted(DOCS.rglob("*.md"))


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "tools" / "docs_hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def python_blocks(path: Path) -> list[str]:
    return [code for _, code in python_blocks_at(path)]


def python_blocks_at(path: Path) -> list[tuple[int, str]]:
    """The page's Python blocks (except those marked not run) with the line (0-based) each
    one's code starts on."""
    text = path.read_text()
    return [
        (text.count("\n", 0, m.start(2)), m.group(2))
        for m in re.finditer(r"(<!-- not run -->\n)?```python\n(.*?)```", text, flags=re.S)
        if not m.group(1)
    ]


@pytest.mark.parametrize(
    "page", [*PAGES, ROOT / "README.md"], ids=lambda p: str(p.relative_to(ROOT))
)
def test_every_python_block_of_a_docs_page_runs_in_order(page, tmp_path, monkeypatch):
    blocks = python_blocks_at(page)
    if not blocks:
        pytest.skip(f"{page.name} has no Python block")
    monkeypatch.chdir(tmp_path)  # pages that write files (checkpoints, plots) write them here
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    import chronograd.rules as rules

    before = dict(rules.RULES)
    try:
        for line, block in blocks:  # padded so a traceback names the page's own line
            exec(compile("\n" * line + block, str(page), "exec"), namespace)
    finally:  # a page may register rules: leave the registry as it was
        rules.RULES.clear()
        rules.RULES.update(before)


def test_adding_a_rule_page_has_the_template_and_the_oracle():
    blocks = python_blocks(DOCS / "ADDING_A_RULE.md")
    assert any("class OneStep(LearningRule)" in b for b in blocks)
    assert any("assert_close" in b for b in blocks)


def test_every_page_is_in_the_navigation():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in PAGES:
        assert str(page.relative_to(DOCS)) in nav, f"{page} is missing from mkdocs.yml's nav"


def test_every_public_module_and_name_has_a_docstring():
    assert _hooks().missing_docstrings() == []


def test_the_docstring_check_finds_a_missing_docstring(tmp_path, monkeypatch):
    pkg = tmp_path / "tinypkg"
    (pkg / "_private").mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""A package."""\n')
    (pkg / "good.py").write_text(
        '"""Documented."""\n\n\ndef f():\n    """Says what."""\n\n\n'
        'class C:\n    """A class."""\n\n    def m(self):\n        pass\n\n'
        "    def _hidden(self):\n        pass\n"
    )
    (pkg / "bad.py").write_text("def g():\n    pass\n\n\ndef _private():\n    pass\n")
    (pkg / "_private" / "__init__.py").write_text("def h():\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    hooks = _hooks()
    assert hooks.public_modules("tinypkg") == ["tinypkg", "tinypkg.bad", "tinypkg.good"]
    assert sorted(hooks.missing_docstrings("tinypkg")) == [
        "tinypkg.bad",
        "tinypkg.bad.g",
        "tinypkg.good.C.m",
    ]


def test_the_api_reference_covers_every_public_module():
    hooks = _hooks()
    modules = hooks.public_modules()
    for name in ("chronograd.rules.bptt", "chronograd.traces", "chronograd.training.trainer"):
        assert name in modules
    assert not [m for m in modules if "._" in m]
    assert hooks.api_page("chronograd.rules.bptt") == (
        "# `chronograd.rules.bptt`\n\n::: chronograd.rules.bptt\n"
    )


def test_the_docstring_extension_moves_the_shared_options_note_and_rewrites_roles():
    pytest.importorskip("griffe")
    spec = importlib.util.spec_from_file_location(
        "griffe_docstrings", ROOT / "tools" / "griffe_docstrings.py"
    )
    assert spec is not None and spec.loader is not None
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    doc = (
        "A rule.\n\nArgs:\n    k: steps.\n    (plus the options shared by every rule, see\n"
        "        :class:`~chronograd.rules.LearningRule`)\n\nReturns:\n    nothing."
    )
    assert ext.roles_to_code(ext.move_plus_note(doc)) == (
        "A rule.\n\nArgs:\n    k: steps.\n\nReturns:\n    nothing.\n\n"
        "Plus the options shared by every rule, see `LearningRule`."
    )
    assert (
        ext.move_plus_note("No note.\n\nArgs:\n    k: steps.") == "No note.\n\nArgs:\n    k: steps."
    )
    assert ext.roles_to_code(":func:`chronograd.gradient`") == "`chronograd.gradient`"


def test_pipes_escaped_for_github_are_unescaped_in_table_code_spans_only():
    fix = _hooks().unescape_table_code
    assert fix("| `a\\|b` | x \\| y |") == "| `a|b` | x \\| y |"
    assert fix("text `a\\|b`") == "text `a\\|b`"


def test_readme_quick_start_is_examples_quickstart():
    quick = python_blocks(ROOT / "README.md")[0]
    assert "cg.tasks.get(" in quick and "trainer.fit(" in quick
    assert quick.strip() in (ROOT / "examples" / "quickstart.py").read_text()


def test_not_run_marker_skips_only_the_marked_block(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(f"```python\na = 1\n```\n{NOT_RUN}\n```python\nraise SystemExit\n```\n")
    assert python_blocks(page) == ["a = 1\n"]
