"""The command line as a newcomer meets it: help text, config, unknown variables, the demo."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from resilient_llm import ConfigError, Policy
from resilient_llm import _policy as policy_module
from resilient_llm.__main__ import _prog, build_parser, main
from resilient_llm._demo import Progress, progress_line, quarter_marks, run_demo

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONHASHSEED": "0"}


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "resilient_llm", *args],
                          env={**ENV, **(env or {})}, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy_module, "_warned_unknown", set())


# --- help and program name --------------------------------------------------------------------


def test_help_has_no_raw_markup_and_names_the_module_invocation() -> None:
    proc = _cli("--help")
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: python -m resilient_llm ")
    assert "``" not in proc.stdout and ":meth:" not in proc.stdout
    assert "demo" in proc.stdout and "config" in proc.stdout


@pytest.mark.parametrize(("argv0", "prog"), [
    ("/venv/bin/resilient-llm", "resilient-llm"),
    ("C:\\venv\\Scripts\\resilient-llm.exe".replace("\\", "/"), "resilient-llm"),
    ("/src/resilient_llm/__main__.py", "python -m resilient_llm"),
    ("-c", "python -m resilient_llm"),
])
def test_program_name_follows_how_the_command_was_started(argv0: str, prog: str) -> None:
    assert _prog(argv0) == prog
    assert build_parser(_prog(argv0)).format_usage().startswith(f"usage: {prog} ")


# --- config -----------------------------------------------------------------------------------


def test_config_into_a_closed_pipe_ends_quietly() -> None:
    """`config | head -3`: the reader goes away; no BrokenPipeError traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first write
    try:
        proc = subprocess.run([sys.executable, "-m", "resilient_llm", "config"], env=ENV,
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60,
                              check=False)
    finally:
        os.close(write_end)
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr
    assert proc.returncode == 1


def test_a_misspelled_variable_is_a_line_in_config_naming_the_closest() -> None:
    proc = _cli("config", env={"RESILIENT_LLM_DEADLNE": "5"})
    assert proc.returncode == 0
    assert ("unknown: RESILIENT_LLM_DEADLNE is not a resilient-llm setting and is ignored; "
            "did you mean RESILIENT_LLM_DEADLINE?") in proc.stdout
    assert "Warning" not in proc.stderr


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_strict_config_exits_non_zero_naming_the_variable(how: str) -> None:
    env = {"RESILIENT_LLM_DEADLNE": "5"}
    args = ["config"]
    if how == "flag":
        args.append("--strict")
    else:
        env["RESILIENT_LLM_STRICT"] = "1"
    proc = _cli(*args, env=env)
    assert proc.returncode == 2
    assert "RESILIENT_LLM_DEADLNE" in proc.stderr and "RESILIENT_LLM_DEADLINE?" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_strict_mode_without_unknown_variables_passes() -> None:
    proc = _cli("config", "--strict", env={"RESILIENT_LLM_STRICT": "1",
                                           "RESILIENT_LLM_DEADLINE": "5"})
    assert proc.returncode == 0, proc.stderr
    assert "unknown:" not in proc.stdout


def test_first_client_construction_warns_once_about_an_unknown_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from resilient_llm.openai import OpenAI

    monkeypatch.setenv("RESILIENT_LLM_MAX_ATEMPTS", "2")
    with pytest.warns(UserWarning, match="RESILIENT_LLM_MAX_ATEMPTS .* did you mean "
                                         "RESILIENT_LLM_MAX_ATTEMPTS") as caught:
        client = OpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1")
    assert client.policy.max_attempts == 4  # ignored, as the warning says
    assert len(caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second client does not warn again
        OpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1")


def test_strict_environment_makes_client_construction_fail(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from resilient_llm.openai import OpenAI

    monkeypatch.setenv("RESILIENT_LLM_CACHE_SECRETT", "a-secret-nobody-may-see")
    monkeypatch.setenv("RESILIENT_LLM_STRICT", "1")
    with pytest.raises(ConfigError) as info:
        OpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1")
    message = str(info.value)
    assert "RESILIENT_LLM_CACHE_SECRETT" in message and "RESILIENT_LLM_CACHE_SECRET?" in message
    assert "a-secret-nobody-may-see" not in message


def test_a_bad_strict_value_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESILIENT_LLM_STRICT", "maybe")
    with pytest.raises(ConfigError, match="RESILIENT_LLM_STRICT='maybe' is invalid"):
        Policy.from_env()


def test_an_unknown_name_far_from_every_setting_points_at_the_reference() -> None:
    message = policy_module.unknown_env_message("RESILIENT_LLM_XYZZY")
    assert "config --markdown" in message and "did you mean" not in message


# --- demo -------------------------------------------------------------------------------------


def test_demo_without_the_openai_package_gives_the_install_line() -> None:
    code = ("import sys; sys.modules['openai'] = None\n"
            "from resilient_llm.__main__ import main\n"
            "sys.exit(main(['demo']))\n")
    proc = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 2
    assert "python -m pip install 'resilient-llm[openai]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_progress_line_names_the_client_calls_and_elapsed_time() -> None:
    line = progress_line("resilient_llm.openai.OpenAI", 10, 40, 3.25)
    assert "resilient_llm.openai.OpenAI" in line
    assert "10/40 calls" in line and "3.2 s" in line
    assert "[#####...............]" in line


def test_quarter_marks_print_each_quarter_once() -> None:
    shown, printed = 0, []
    for done in range(1, 41):
        mark = quarter_marks(done, 40, shown)
        if mark != shown:
            printed.append(done)
            shown = mark
    assert printed == [10, 20, 30, 40]
    assert quarter_marks(3, 3, 0) == 3  # several marks passed at once: one line


def test_progress_off_a_terminal_writes_plain_lines_at_each_quarter() -> None:
    out = io.StringIO()
    now = [0.0]
    with Progress("official", 8, stream=out, tty=False, clock=lambda: now[0]) as progress:
        for _ in range(8):
            now[0] += 0.5
            progress.step()
    lines = out.getvalue().splitlines()
    assert [line.split("]")[1].split("calls")[0].strip() for line in lines] == \
        ["2/8", "4/8", "6/8", "8/8"]
    assert "\r" not in out.getvalue() and "4.0 s" in lines[-1]


def test_progress_on_a_terminal_redraws_one_line_and_ends_it() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    with Progress("resilient", 2, stream=out) as progress:
        progress.step()
        progress.step()
    text = out.getvalue()
    assert text.startswith("\r") and text.endswith("\n")
    assert "2/2 calls" in text.splitlines()[-1]


@pytest.mark.slow
def test_demo_shows_progress_and_ends_with_its_table(capsys: pytest.CaptureFixture[str]) -> None:
    progress = io.StringIO()
    assert run_demo(calls=4, deadline=1.0, workers=4, progress_stream=progress) == 0
    out = capsys.readouterr().out
    assert "4/4 calls" in progress.getvalue()
    assert "openai.OpenAI(timeout=1)" in progress.getvalue()
    assert "resilient_llm.openai.OpenAI" in progress.getvalue()
    table = out[out.index("client "):]
    assert "resilient_llm.openai.OpenAI" in table and "attempts/call" in table


def test_main_returns_the_command_status(monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RESILIENT_LLM_DEADLINE", "nope")
    assert main(["config"]) == 2
    assert "RESILIENT_LLM_DEADLINE='nope' is invalid" in capsys.readouterr().err


@pytest.mark.parametrize("deadline", ["nan", "inf", "0.001", "100000", "-1", "0"])
def test_demo_refuses_a_deadline_the_policy_does_not_take(
    deadline: str, capsys: pytest.CaptureFixture[str],
) -> None:
    """One line naming the option, as for its other bad values; no traceback, nothing run."""
    assert main(["demo", "--deadline", deadline]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("demo: --") and "--deadline" in captured.err
    assert "Traceback" not in captured.err and captured.err.count("\n") == 1


def test_cli_module_is_documented() -> None:
    text = Path(__file__).resolve().parents[1].joinpath("README.md").read_text()
    assert "python -m resilient_llm config" in text


@pytest.mark.parametrize(("args", "env", "shown"), [
    (("config",), {}, ("false", "default")),
    (("config",), {"RESILIENT_LLM_STRICT": "1"}, ("true", "environment")),
    (("config", "--strict"), {}, ("true", "argument")),
])
def test_config_shows_the_strict_setting_and_its_source(
    args: tuple[str, ...], env: dict[str, str], shown: tuple[str, str],
) -> None:
    proc = _cli(*args, env=env)
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines()
                if line.startswith("RESILIENT_LLM_STRICT "))
    assert line.split()[1:] == list(shown)


def test_config_shows_a_mapping_of_names_as_given(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A value that is one name is shown as the name (it was split into its characters)."""
    monkeypatch.setenv("RESILIENT_LLM_STREAM_CONTINUATION", '{"deepseek-*": "prefill"}')
    monkeypatch.setenv("RESILIENT_LLM_FALLBACKS", '{"gpt-4.1": ["gpt-4.1-mini"]}')
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert re.search(r'STREAM_CONTINUATION +\{"deepseek-\*": "prefill"\} +environment', out)
    assert '{"gpt-4.1": ["gpt-4.1-mini"]}' in out
