"""Check that the built docs site's API reference covers every public name.

    python scripts/check_api_docs.py SITE_DIR

Every name in ``__all__`` of ``resilient_llm``, ``resilient_llm.openai``,
``resilient_llm.anthropic``, ``resilient_llm.testing`` and
``resilient_llm.integrations.tenacity`` must have its own anchor
(``id="resilient_llm.Policy"``, ...) on the module's API page. CI runs this after
``mkdocs build --strict``.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

PAGES = {
    "resilient_llm": "api/index.html",
    "resilient_llm.openai": "api/openai/index.html",
    "resilient_llm.anthropic": "api/anthropic/index.html",
    "resilient_llm.testing": "api/testing/index.html",
    "resilient_llm.integrations.tenacity": "api/integrations/index.html",
}


def missing_names(site: Path) -> dict[str, list[str]]:
    """Module → public names without an anchor on its page."""
    found: dict[str, list[str]] = {}
    for module_name, page in PAGES.items():
        html = (site / page).read_text(encoding="utf-8")
        anchors = set(re.findall(r'id="([^"]+)"', html))
        module = importlib.import_module(module_name)
        missing = [n for n in module.__all__ if f"{module_name}.{n}" not in anchors]
        if missing:
            found[module_name] = missing
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    missing = missing_names(Path(argv[0]))
    for module_name, names in missing.items():
        print(f"API reference: {module_name} does not document {', '.join(names)}",
              file=sys.stderr)
    total = sum(len(importlib.import_module(m).__all__) for m in PAGES)
    print(f"API reference: {total - sum(map(len, missing.values()))} of {total} public names "
          "documented")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
