"""The docs agree with the code and with each other (the site build itself runs in CI)."""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

from resilient_llm.testing import RecordedRequest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NUMBERS = {3: "Three", 4: "Four", 5: "Five", 6: "Six", 7: "Seven", 8: "Eight", 9: "Nine",
           10: "Ten", 11: "Eleven", 12: "Twelve", 13: "Thirteen", 14: "Fourteen"}


def _tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True, timeout=60).stdout.splitlines()
    suffixes = {".md", ".py", ".toml", ".yml", ".yaml", ".cfg", ".txt", ".sh", ""}
    return [ROOT / n for n in names
            if Path(n).suffix in suffixes and (ROOT / n).is_file()]


def test_no_file_names_a_path_of_the_machine_it_was_written_on() -> None:
    pattern = re.compile(r"(?<![\w.$-])/(?:work|root|home/\w+)/[\w.-]")
    offenders = []
    for path in _tracked_text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        offenders += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in pattern.finditer(text)]
    assert offenders == []


def test_benchmarks_page_lists_every_script_and_shows_only_existing_charts() -> None:
    page = (DOCS / "benchmarks.md").read_text(encoding="utf-8")
    scripts = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py")
                     if not p.name.startswith("_"))
    for name in scripts:
        assert f"`{name}`" in page, name
    assert page.count("\n| `") >= len(scripts)
    assert f"{NUMBERS[len(scripts)]} scripts" in page
    images = re.findall(r"!\[[^\]]*\]\((img/[^)]+)\)", page)
    assert len(images) >= 7
    for image in images:
        assert (DOCS / image).is_file(), image
    assert "not met" not in page.lower()


def test_every_chart_a_script_writes_is_on_the_page_or_said_to_be_left_out() -> None:
    page = (DOCS / "benchmarks.md").read_text(encoding="utf-8")
    written = set()
    for script in (ROOT / "benchmarks").glob("*.py"):
        written |= set(re.findall(r'"(bench-[a-z-]+\.svg)"', script.read_text()))
    assert written
    for name in written:
        assert f"img/{name}" in page, name


def test_examples_page_shows_every_example() -> None:
    page = (DOCS / "examples.md").read_text(encoding="utf-8")
    for path in sorted((ROOT / "examples").glob("*.py")):
        assert f'--8<-- "examples/{path.name}"' in page, path.name


def test_site_nav_covers_every_page_and_every_entry_exists() -> None:
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = config[config.index("\nnav:"):config.index("\nvalidation:")]
    entries = set(re.findall(r":\s+([\w/.-]+\.md)\s*$", nav, re.MULTILINE))
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert entries == pages
    assert "font: false" in config  # no web fonts fetched when the site is built or read


def test_testing_page_lists_every_field_of_the_request_log() -> None:
    page = (DOCS / "testing.md").read_text(encoding="utf-8")
    table = page[page.index("## The request log"):]
    table = table[:table.index("\n\n", table.index("| Field |"))]
    names = [f.name for f in dataclasses.fields(RecordedRequest)]
    names += [n for n, v in vars(RecordedRequest).items() if isinstance(v, property)]
    assert "finished" in names
    for name in names:
        assert f"`{name}`" in table, name


def test_readme_links_to_existing_docs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).is_file(), link
