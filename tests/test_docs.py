"""The code on the documentation pages runs as written (so none of it can rot)."""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
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
