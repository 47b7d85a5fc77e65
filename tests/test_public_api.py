"""The public names: exported once, documented, and `import resilient_llm` stays light."""

from __future__ import annotations

import inspect
import subprocess
import sys

import resilient_llm

CONTRACT = {
    "Policy", "deadline", "remaining", "resilient", "side_effect", "run", "outcome",
    "DeadlineExceeded", "ResilientLLMError", "AllTargetsFailed", "CircuitOpen",
    "RetryBudgetExhausted", "StreamInterrupted", "IdempotencyConflict", "ResidencyViolation",
    "ConfigError",
}


def test_all_is_sorted_and_complete() -> None:
    assert list(resilient_llm.__all__) == sorted(resilient_llm.__all__)
    assert set(resilient_llm.__all__) >= CONTRACT
    for name in resilient_llm.__all__:
        assert hasattr(resilient_llm, name), name


def test_public_names_are_documented_and_live_in_the_package() -> None:
    for name in resilient_llm.__all__:
        obj = getattr(resilient_llm, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, f"{name} has no docstring"
            assert obj.__module__ == "resilient_llm", f"{name}.__module__ = {obj.__module__}"


def test_deadline_exceeded_is_a_timeout_error() -> None:
    assert issubclass(resilient_llm.DeadlineExceeded, TimeoutError)
    assert issubclass(resilient_llm.DeadlineExceeded, resilient_llm.ResilientLLMError)
    assert issubclass(resilient_llm.ConfigError, ValueError)


def test_import_does_not_pull_in_provider_sdks_or_heavy_backends() -> None:
    code = (
        "import sys, resilient_llm\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('openai', 'anthropic', 'redis', 'sqlite3') or m.startswith('opentelemetry.sdk')]\n"
        "print(','.join(sorted(heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.strip()
    assert out == ""


def test_every_exported_error_is_in_the_readme_table_and_the_errors_page() -> None:
    """One list of errors: the README table and docs/errors.md name exactly the exports."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    errors_page = (root / "docs" / "errors.md").read_text(encoding="utf-8")
    exported = {
        name for name in resilient_llm.__all__
        if inspect.isclass(getattr(resilient_llm, name))
        and issubclass(getattr(resilient_llm, name), resilient_llm.ResilientLLMError)
        and name != "ResilientLLMError"
    }
    section = readme[readme.index("## Errors"):]
    section = section[:section.index("\n## ", 4)]
    in_readme = set(re.findall(r"^\| `([A-Za-z]+)`", section, re.MULTILINE))
    tree = errors_page[errors_page.index("ResilientLLMError\n"):]
    tree = tree[:tree.index("```")]
    in_page = set(re.findall(r"[├└]── ([A-Za-z]+)", tree))
    assert in_readme == exported
    assert in_page == exported
    others = {name for name in resilient_llm.__all__
              if inspect.isclass(getattr(resilient_llm, name))
              and issubclass(getattr(resilient_llm, name), Exception)} - exported
    for name in others - {"ResilientLLMError"}:
        assert f"`{name}`" in section and f"`{name}`" in errors_page, name
