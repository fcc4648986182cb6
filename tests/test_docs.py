"""The code on the documentation pages and in README.md runs as written (so none of it can rot).

A block that truly cannot run in a test (it needs torchrun, a GPU cluster, a user's file) is
marked by the line ``<!-- not run -->`` right before its fence; every other block runs, in
order, in one namespace per page.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
NOT_RUN = "<!-- not run -->"


def python_blocks(path: Path) -> list[str]:
    """The page's Python blocks, except those marked not run."""
    found = re.findall(r"(<!-- not run -->\n)?```python\n(.*?)```", path.read_text(), flags=re.S)
    return [code for mark, code in found if not mark]


@pytest.mark.parametrize(
    "page", [*sorted(DOCS.glob("*.md")), ROOT / "README.md"], ids=lambda p: p.name
)
def test_every_python_block_of_a_docs_page_runs_in_order(page):
    blocks = python_blocks(page)
    if not blocks:
        pytest.skip(f"{page.name} has no Python block")
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    import chronograd.rules as rules

    before = dict(rules.RULES)
    try:
        for block in blocks:
            exec(compile(block, str(page), "exec"), namespace)
    finally:  # a page may register rules: leave the registry as it was
        rules.RULES.clear()
        rules.RULES.update(before)


def test_adding_a_rule_page_has_the_template_and_the_oracle():
    blocks = python_blocks(DOCS / "ADDING_A_RULE.md")
    assert any("class OneStep(LearningRule)" in b for b in blocks)
    assert any("assert_close" in b for b in blocks)


def test_readme_quick_start_is_examples_quickstart():
    quick = python_blocks(ROOT / "README.md")[0]
    assert "cg.tasks.get(" in quick and "trainer.fit(" in quick
    assert quick.strip() in (ROOT / "examples" / "quickstart.py").read_text()


def test_not_run_marker_skips_only_the_marked_block(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(f"```python\na = 1\n```\n{NOT_RUN}\n```python\nraise SystemExit\n```\n")
    assert python_blocks(page) == ["a = 1\n"]
