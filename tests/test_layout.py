"""The layout keeps modules small: one concept each, readable in one sitting.

``testing/`` is exempt (the fault provider's wire formats are long tables by nature).
"""

from __future__ import annotations

from pathlib import Path

import resilient_llm

ROOT = Path(resilient_llm.__file__).parent
MAX_LINES = 700


def test_no_module_outside_testing_exceeds_the_line_limit() -> None:
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines())
        for path in ROOT.rglob("*.py")
        if "testing" not in path.relative_to(ROOT).parts
    }
    assert len(sizes) > 50, "the walk found the package's modules"
    too_long = {name: lines for name, lines in sizes.items() if lines > MAX_LINES}
    assert not too_long, f"split these modules (at most {MAX_LINES} lines each): {too_long}"
