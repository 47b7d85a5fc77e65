"""The configuration reference page is generated from Policy and cannot drift from it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from resilient_llm import Policy
from resilient_llm import _config_reference as reference
from resilient_llm._policy import STRICT_VAR, env_var, known_env_vars

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "configuration.md"


def test_committed_page_is_the_generated_one() -> None:
    generated = subprocess.run(
        [sys.executable, "-m", "resilient_llm", "config", "--markdown"], capture_output=True,
        text=True, check=True, timeout=60, env={"PATH": "/usr/bin:/bin"},
    ).stdout
    assert PAGE.read_text(encoding="utf-8") == generated, (
        "docs/configuration.md differs from Policy: regenerate it with "
        "`python -m resilient_llm config --markdown > docs/configuration.md`"
    )


def test_every_variable_has_meaning_type_default_range_and_example() -> None:
    rows = reference.rows()
    assert [row[0] for row in rows] == [*(env_var(f) for f in Policy.model_fields), STRICT_VAR]
    assert sorted(row[0] for row in rows) == known_env_vars()
    for row in rows:
        assert all(cell.strip() for cell in row), row
    page = PAGE.read_text(encoding="utf-8")
    assert "`RESILIENT_LLM_MAX_BACKOFF`" in page


def test_a_field_without_a_meaning_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    meanings = dict(reference.MEANINGS)
    del meanings["max_backoff"]
    monkeypatch.setattr(reference, "MEANINGS", meanings)
    with pytest.raises(KeyError, match="max_backoff"):
        reference.rows()


def test_defaults_on_the_page_are_the_policy_defaults() -> None:
    policy = Policy()
    by_var = {row[0]: row[3] for row in reference.rows()}
    assert by_var["RESILIENT_LLM_DEADLINE"] == f"{policy.deadline:g}"
    assert by_var["RESILIENT_LLM_MAX_BACKOFF"] == f"{policy.max_backoff:g}"
    assert by_var["RESILIENT_LLM_ENABLED"] == "true"
    assert by_var["RESILIENT_LLM_REDIS_URL"] == "unset"


def test_the_readme_table_agrees_with_policy_and_links_the_reference() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/configuration.md" in readme
    section = readme[readme.index("## Configuration"):readme.index("## Scopes")]
    defaults = {row[0]: row[3] for row in reference.rows()}
    for variable, default in re.findall(r"^\| `(RESILIENT_LLM_[A-Z_]+)` \|[^|]*\| `([^`]*)` \|$",
                                        section, re.MULTILINE):
        assert defaults[variable] == default, variable
