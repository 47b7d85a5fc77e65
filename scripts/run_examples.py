"""Run every example exactly as its header says: its install line in a fresh virtualenv.

    python scripts/run_examples.py [--keep-going]

Each example's docstring gives one ``python -m pip install ...`` line and one
``python examples/NAME.py`` line. The install line runs in a fresh virtualenv (``venv``, from
the repository root, as a newcomer would) and the example then runs there with no other
environment than ``PATH``, so an extra the header forgot shows up as an ``ImportError``.
Lines run from fewest extras to most; a line that only adds extras to the previous one reuses
its virtualenv after the previous examples ran. CI (``.ci/run``) runs this script.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
INSTALL = re.compile(r"^\s+(python -m pip install -e (?:\.|'\.\[[a-z,]+\]'))\s*$", re.MULTILINE)


def install_line(path: Path) -> str:
    """The one install line of ``path``'s header (and the run line must follow it)."""
    text = path.read_text(encoding="utf-8")
    doc = text.split('"""')[1] if text.startswith('"""') else ""
    lines = INSTALL.findall(doc)
    if len(lines) != 1:
        raise SystemExit(f"{path.name}: the header must give exactly one install line "
                         f"(python -m pip install -e '.[extras]'), found {lines}")
    if f"python examples/{path.name}" not in doc:
        raise SystemExit(f"{path.name}: the header must say how to run it: "
                         f"python examples/{path.name}")
    return str(lines[0])


def extras_of(line: str) -> frozenset[str]:
    """The extras an install line asks for (none for ``python -m pip install -e .``)."""
    inside = line.partition("[")[2].partition("]")[0]
    return frozenset(e for e in inside.split(",") if e)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep-going", action="store_true", help="run every example")
    args = parser.parse_args(argv)
    groups: dict[str, list[Path]] = {}
    for path in sorted(EXAMPLES.glob("*.py")):
        groups.setdefault(install_line(path), []).append(path)
    failed: list[str] = []
    previous: frozenset[str] | None = None
    with tempfile.TemporaryDirectory(prefix="resilient-llm-examples-") as tmp:
        # Fewest extras first. When a line only adds extras to the previous one, its examples
        # run in the same virtualenv after the previous line's examples ran there without those
        # extras: an example whose header forgets an extra still fails, and CI saves a venv.
        for n, line in enumerate(sorted(groups, key=lambda x: (len(extras_of(x)), x))):
            paths = groups[line]
            extras = extras_of(line)
            if previous is None or not previous <= extras:
                env_dir = Path(tmp) / f"venv{n}"
                venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
            previous = extras
            bin_dir = env_dir / ("Scripts" if os.name == "nt" else "bin")
            env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
                   "VIRTUAL_ENV": str(env_dir), "PYTHONHASHSEED": "0",
                   "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
            print(f"::: {line}   (for {', '.join(p.name for p in paths)})", flush=True)
            started = time.monotonic()
            subprocess.run(["bash", "-c", line + " -q"], cwd=ROOT, env=env, check=True)
            print(f"    installed in {time.monotonic() - started:.0f} s", flush=True)
            for path in paths:
                started = time.monotonic()
                proc = subprocess.run(["python", f"examples/{path.name}"], cwd=ROOT, env=env,
                                      capture_output=True, text=True, timeout=300, check=False)
                status = "ok" if proc.returncode == 0 and proc.stdout.strip() else "FAILED"
                print(f"    python examples/{path.name}: {status} "
                      f"({time.monotonic() - started:.1f} s)", flush=True)
                if status != "ok":
                    print(proc.stdout[-2000:] + proc.stderr[-3000:], flush=True)
                    failed.append(path.name)
                    if not args.keep_going:
                        return 1
    print(f"examples: {sum(len(p) for p in groups.values()) - len(failed)} passed, "
          f"{len(failed)} failed")
    return 1 if failed else 0

if __name__ == "__main__":
    sys.exit(main())
