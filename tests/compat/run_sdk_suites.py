"""Run the official SDKs' own tests against resilient-llm's drop-in classes.

    python tests/compat/run_sdk_suites.py [--sdk openai|anthropic|all] [--cache DIR]
                                          [--workers N] [--keep-going]

"Swap the client import" holds only if the swapped client passes the official client's own
tests, except where resilience is the point. This script:

1. makes a virtualenv in the cache dir that sees the site-packages of the interpreter running
   this script (so the SDKs, httpx2 and resilient-llm tested are the ones of the environment
   that runs the tests, a virtualenv included) and installs the suites' pinned test
   dependencies there, so they never leak into the project's own test run;
2. fetches the pinned source distributions with ``pip download --no-deps --no-binary :all:``,
   checks their SHA-256, and extracts them;
3. runs each suite's ``tests/test_client.py`` and the ``tests/lib/`` suites of its cloud client
   classes (:data:`SUITE_FILES`) with an early plugin (``rebind_openai`` / ``rebind_anthropic``)
   that rebinds every public client class to its drop-in before the suite imports it, and
   writes JUnit XML;
4. compares the outcome with ``deviations.toml``: a failure that no entry lists fails the run,
   and so does a listed test that now passes or an entry that matches no test, so the list
   stays honest.

Exit status 0 only when every failure is an expected deviation. The cache dir defaults to
``.ci/cache/compat`` (gitignored); ``COMPAT_CACHE_DIR`` overrides it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import tarfile
import time
import venv
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the project's CI runs 3.11
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

#: Every SDK release whose suite is known to run here, with the SHA-256 of its source
#: distribution. The suite that runs is the one of the *installed* version (the suites test the
#: installed package, not the sdist's copy); an installed version missing here fails the run.
#: The oldest and newest entries are the bounds in ``resilient_llm._sdk_versions`` (CI's second
#: stage installs the oldest, the README's set-up gets the newest); deviations that apply to
#: only some versions say so with ``versions = [...]`` in ``deviations.toml``.
TESTED: dict[str, dict[str, str]] = {
    "openai": {
        "3.50.0": "ff094ba851ce512e0682f259e8c5bdc4802c7ef5373f68e7fd261261bb4496f2",
        "3.54.0": "2e393e63f8a38be6452806f9ef0b6534fecd6d41ab3b2165180dfce3599249cd",
        "3.63.0": "d97e2cc745641c855140205671aea7b5d262219764340916ee4d96b94c806ce4",
    },
    "anthropic": {
        "2.10.0": "6f3ffbdc6eb0a09a197be2eabdc62b8395a13d692710b8cdfa0393a80b355585",
        "2.12.0": "571e6d250bcd6bbaf5fd5f3c764b8e11af9901ad2e44b025f8e773c6cc7a7173",
        "2.16.0": "c6386ded247ae56db35e34a3d828229cf07847934f1cbdc7dbb696b2944b4510",
        "2.17.0": "1be6bc44c4eca7e439432737e4af5c7a2d4935c5ebbf7b24cb75560c238a5934",
    },
}
SDK_NAMES = tuple(TESTED)

#: The test files each suite runs (globs, relative to the sdist): the client's own tests and
#: those of every cloud client class (``tests/lib/``: Azure, Bedrock, Vertex, Foundry, AWS,
#: Google Cloud, Mantle), without the ``*_live`` files that need a cloud account.
SUITE_FILES: dict[str, tuple[str, ...]] = {
    "openai": ("tests/test_client.py", "tests/lib/test_azure*.py", "tests/lib/test_bedrock*.py",
               "tests/lib/test_vertex*.py"),
    "anthropic": ("tests/test_client.py", "tests/lib/test_aws*.py", "tests/lib/test_azure*.py",
                  "tests/lib/test_bedrock*.py", "tests/lib/test_vertex*.py",
                  "tests/lib/test_google_cloud*.py", "tests/lib/test_client_copy.py"),
}


#: The releases whose cloud suites (``tests/lib/``) have been run against the drop-ins and their
#: deviations listed; for any other release only ``tests/test_client.py`` runs, until someone
#: runs its cloud suites and lists what differs (``versions = [...]`` in deviations.toml).
CLOUD_SUITES_CHECKED: dict[str, frozenset[str]] = {
    "openai": frozenset({"3.63.0"}),
    "anthropic": frozenset({"2.17.0"}),
}


def suite_files(sdk: str, tree: Path, version: str) -> list[str]:
    """The files of ``sdk``'s suite present in ``tree`` (older releases have fewer)."""
    patterns = SUITE_FILES[sdk] if version in CLOUD_SUITES_CHECKED[sdk] else SUITE_FILES[sdk][:1]
    found = sorted({str(path.relative_to(tree)) for pattern in patterns
                    for path in tree.glob(pattern) if not path.stem.endswith("_live")})
    return [f for f in found if f == "tests/test_client.py"] + [
        f for f in found if f != "tests/test_client.py"]


def installed_versions(sdks: list[str]) -> dict[str, tuple[str, str]]:
    """(version, sdist SHA-256) of each installed SDK; a version not in TESTED is an error."""
    found: dict[str, tuple[str, str]] = {}
    for name in sdks:
        version = metadata.version(name)
        digest = TESTED[name].get(version)
        if digest is None:
            known = ", ".join(TESTED[name])
            raise SystemExit(
                f"compat: {name} {version} is installed but its suite is not known here (known: "
                f"{known}); add it to TESTED in {Path(__file__).name} with its sdist's SHA-256 "
                "(pip download --no-deps --no-binary :all:) and check deviations.toml"
            )
        found[name] = (version, digest)
    return found


#: What the two suites import or load as plugins (providers.md §7.1), pinned to versions their
#: lock files accept; one environment serves both. ``aiohttp`` runs the aiohttp-client cases;
#: ``boto3``, ``google-auth`` and ``websockets`` the cloud suites (SigV4, Google credentials,
#: Azure realtime);
#: ``hatchling`` and ``hatch-fancy-pypi-readme`` let pip read the sdists' metadata without
#: building an isolated environment for each (a minute saved on a cold cache).
TEST_DEPS = (
    "pytest-asyncio==1.4.1",
    "pytest-xdist==3.8.0",
    "inline-snapshot==0.36.1",
    "rich==15.0.0",
    "dirty-equals==0.11",
    "respx==0.22.0",
    "time-machine==3.2.0",
    "http-snapshot[httpx]==0.1.9",
    "aiohttp==3.14.5",
    "boto3==1.44.18",
    "botocore==1.44.18",
    "google-auth[requests]==2.63.1",
    "websockets==17.4",
    "hatchling==1.33.0",
    "hatch-fancy-pypi-readme==25.1.0",
)

#: Plugins of the project's environment that the suites must not load.
DISABLED_PLUGINS = ("cacheprovider", "benchmark")


@dataclass
class Deviation:
    """One committed deviation: test-id patterns (``*`` is the only wildcard) and why."""

    sdk: str
    patterns: list[str]
    reason: str
    run: bool = True
    matched: list[str] = field(default_factory=list)

    def matches(self, test_id: str) -> bool:
        return any(_glob(p).fullmatch(test_id) for p in self.patterns)


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))


@dataclass
class Result:
    sdk: str
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    deselected: list[str] = field(default_factory=list)
    seconds: float = 0.0


def load_deviations(path: Path, versions: dict[str, str] | None = None) -> list[Deviation]:
    """The entries of ``path``; with ``versions`` (sdk → installed version), only those that
    apply to it (an entry without ``versions`` applies to every version)."""
    data = tomllib.loads(path.read_text())
    found: list[Deviation] = []
    for sdk in SDK_NAMES:
        for entry in data.get(sdk, []):
            only = entry.get("versions")
            if only is not None and not (isinstance(only, list) and only and all(
                    v in TESTED[sdk] for v in only)):
                raise SystemExit(f"{path}: an [[{sdk}]] entry's versions must list versions "
                                 f"of TESTED, got {only!r}")
            if versions is not None and only is not None and versions.get(sdk) not in only:
                continue
            reason = str(entry.get("reason", "")).strip()
            if not reason:
                raise SystemExit(f"{path}: an [[{sdk}]] entry has no reason")
            tests = entry.get("tests")
            if not isinstance(tests, list) or not tests:
                raise SystemExit(f"{path}: an [[{sdk}]] entry lists no tests")
            run = bool(entry.get("run", True))
            if not run and any("*" in t for t in tests):
                raise SystemExit(f"{path}: run = false needs exact test ids, got {tests}")
            found.append(Deviation(sdk, [str(t) for t in tests], reason, run))
    return found


# --- environment ------------------------------------------------------------------------------


def _run(cmd: list[str]) -> None:
    """Run a set-up command quietly; show its output only when it fails."""
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(proc.stdout[-4000:] + proc.stderr[-4000:], file=sys.stderr)
        raise subprocess.CalledProcessError(proc.returncode, cmd)


def parent_site_dirs() -> list[str]:
    """The site-packages folders of the interpreter running this script, in its own order.

    ``venv``'s ``system_site_packages`` would show the *base* interpreter's packages: made from
    inside a user's virtualenv, the suites would then miss the SDKs installed there.
    """
    return [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages")]


def ensure_venv(cache: Path) -> Path:
    """The suites' virtualenv (created once, re-made when the pins or the parent env change).

    A ``.pth`` file adds the parent's site folders after the venv's own with
    ``site.addsitedir``, which also reads their ``.pth`` files (editable installs): the suites'
    pinned test dependencies win, everything else is the parent's.
    """
    env_dir = cache / "venv"
    python = env_dir / "bin" / "python"
    marker = env_dir / "resilient-llm-compat.txt"
    parents = parent_site_dirs()
    wanted = "\n".join([*TEST_DEPS, *parents])
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    print(f"compat: preparing {env_dir}", flush=True)
    venv.EnvBuilder(system_site_packages=False, clear=True, with_pip=True).create(env_dir)
    own_site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in parents)
    (Path(own_site) / "zz_resilient_llm_parent_env.pth").write_text(lines)
    _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
          *TEST_DEPS])
    marker.write_text(wanted)
    return python


def ensure_sources(python: Path, cache: Path, wanted: dict[str, tuple[str, str]]
                   ) -> dict[str, Path]:
    """Fetch (pinned, hash-checked) and extract each SDK's source distribution."""
    downloads = cache / "sdists"
    downloads.mkdir(parents=True, exist_ok=True)
    missing = [f"{n}=={v}" for n, (v, _) in wanted.items()
               if not (downloads / f"{n}-{v}.tar.gz").exists()]
    if missing:
        base = [str(python), "-m", "pip", "download", "--disable-pip-version-check", "-q",
                "--no-deps", "--no-binary", ":all:", "-d", str(downloads)]
        try:  # reading the sdists' metadata with the venv's hatchling is much faster
            _run([*base, "--no-build-isolation", *missing])
        except subprocess.CalledProcessError:
            _run([*base, *missing])
    trees: dict[str, Path] = {}
    for name, (version, digest) in wanted.items():
        archive = downloads / f"{name}-{version}.tar.gz"
        actual = hashlib.sha256(archive.read_bytes()).hexdigest()
        if actual != digest:
            raise SystemExit(f"compat: {archive.name} has SHA-256 {actual}, expected {digest}")
        tree = cache / "src" / f"{name}-{version}"
        if not (tree / "tests" / "test_client.py").exists():
            tree.parent.mkdir(parents=True, exist_ok=True)
            with tarfile.open(archive) as tar:
                tar.extractall(tree.parent, filter="data")
        trees[name] = tree
    return trees


# --- one suite --------------------------------------------------------------------------------


def run_suite(python: Path, sdk: str, tree: Path, cache: Path, workers: int,
              deviations: list[Deviation], version: str) -> Result:
    junit = cache / f"junit-{sdk}.xml"
    junit.unlink(missing_ok=True)
    cmd = [str(python), "-m", "pytest", *suite_files(sdk, tree, version), "-q", "--tb=line",
           "-p", f"rebind_{sdk}", "--junitxml", str(junit), "-o", "junit_family=xunit1"]
    for plugin in DISABLED_PLUGINS:
        cmd += ["-p", f"no:{plugin}"]
    cmd += ["-n", str(workers)] if workers > 0 else ["-p", "no:xdist"]
    deselected = [t for d in deviations if d.sdk == sdk and not d.run for t in d.patterns]
    for test_id in deselected:
        cmd += ["--deselect", _node_id(test_id)]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RESILIENT_LLM_", "OPENAI_", "ANTHROPIC_", "PYTEST_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    result = Result(sdk, seconds=time.monotonic() - started, deselected=deselected)
    log = cache / f"pytest-{sdk}.log"
    log.write_text(proc.stdout + proc.stderr)
    if not junit.exists():
        print(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"compat: the {sdk} suite did not run (exit {proc.returncode}); "
                         f"see {log}")
    outcomes = {"skipped": result.skipped, "failed": result.failed, "passed": result.passed}
    for case in ET.parse(junit).getroot().iter("testcase"):
        if case.find("skipped") is not None:
            kind = "skipped"
        elif case.find("failure") is not None or case.find("error") is not None:
            kind = "failed"
        else:
            kind = "passed"
        outcomes[kind].append(_test_id(case))
    return result


def _test_id(case: ET.Element) -> str:
    """``TestOpenAI::test_x[param]`` (or ``test_x[param]``) from a JUnit test case of
    ``tests/test_client.py``; ``lib/test_azure.py::TestX::test_y`` for the cloud suites."""
    classname = case.get("classname", "")
    name = case.get("name", "")
    parts = classname.split(".")
    cls = parts[-1] if parts and parts[-1][:1].isupper() else ""
    modules = parts[:-1] if cls else parts
    own = f"{cls}::{name}" if cls else name
    if modules[-2:] == ["tests", "test_client"] or len(modules) < 2:
        return own
    return "/".join(modules[1:]) + ".py::" + own


def _node_id(test_id: str) -> str:
    """The pytest node id of a test id as :func:`_test_id` writes it."""
    if ".py::" in test_id:
        return f"tests/{test_id}"
    return f"tests/test_client.py::{test_id}"


def compare(result: Result, deviations: list[Deviation]) -> list[str]:
    """Problems: unexpected failures, listed tests that pass, entries matching nothing."""
    problems: list[str] = []
    mine = [d for d in deviations if d.sdk == result.sdk and d.run]
    for test_id in result.failed:
        owner = next((d for d in mine if d.matches(test_id)), None)
        if owner is None:
            problems.append(f"unexpected failure: {test_id}")
        else:
            owner.matched.append(test_id)
    problems += [f"listed as a deviation but passes (remove it): {test_id}"
                 for test_id in result.passed if any(d.matches(test_id) for d in mine)]
    problems += [f"deviation entry matches no failing test: {dev.patterns}"
                 for dev in mine if not dev.matched]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sdk", choices=[*SDK_NAMES, "all"], default="all")
    parser.add_argument("--cache", type=Path, default=Path(
        os.environ.get("COMPAT_CACHE_DIR") or ROOT / ".ci" / "cache" / "compat"))
    parser.add_argument("--workers", type=int, default=2,
                        help="pytest-xdist workers per suite (0: no xdist)")
    parser.add_argument("--deviations", type=Path, default=HERE / "deviations.toml")
    args = parser.parse_args(argv)

    sdks = list(SDK_NAMES) if args.sdk == "all" else [args.sdk]
    cache: Path = args.cache.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    wanted = installed_versions(sdks)
    deviations = load_deviations(args.deviations, {n: v for n, (v, _) in wanted.items()})
    python = ensure_venv(cache)
    trees = ensure_sources(python, cache, wanted)
    setup = time.monotonic() - started

    failed = False
    for sdk in sdks:
        result = run_suite(python, sdk, trees[sdk], cache, args.workers, deviations,
                           wanted[sdk][0])
        problems = compare(result, deviations)
        entries = sum(1 for d in deviations if d.sdk == sdk)
        print(f"compat {sdk} {wanted[sdk][0]}: {len(result.passed)} passed, "
              f"{len(result.failed)} failed as listed deviations"
              f"{'' if not problems else ' (see problems)'}, {len(result.skipped)} skipped, "
              f"{len(result.deselected)} not run; {entries} deviation entries; "
              f"{result.seconds:.1f} s", flush=True)
        for problem in problems:
            print(f"  {sdk}: {problem}")
        failed = failed or bool(problems)
    print(f"compat: setup {setup:.1f} s, total {time.monotonic() - started:.1f} s; "
          f"{'FAILED' if failed else 'ok'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
