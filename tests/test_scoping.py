"""The scope base shared by deadline, run and ``@resilient``: one variable, entered once."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from resilient_llm import Policy, resilient, run
from resilient_llm.context.deadline import current_deadline, deadline
from resilient_llm.context.overrides import effective_policy
from resilient_llm.context.scoping import VarScope
from resilient_llm.idempotency.side_effect import current_run

_LABEL: contextvars.ContextVar[str] = contextvars.ContextVar("test_label", default="outside")


class _Label(VarScope[str]):
    __slots__ = ("_text",)

    def __init__(self, text: str) -> None:
        super().__init__(_LABEL)
        self._text = text

    def _value(self) -> str:
        return f"{_LABEL.get()}/{self._text}"


def test_a_var_scope_sets_its_value_and_restores_the_outer_one() -> None:
    with _Label("a") as outer:
        assert _LABEL.get() == "outside/a"
        with _Label("b"):
            assert _LABEL.get() == "outside/a/b"
        assert _LABEL.get() == "outside/a"
    assert _LABEL.get() == "outside"
    with outer:  # entered and left once: it may be entered again
        assert _LABEL.get() == "outside/a"
    assert _LABEL.get() == "outside"


def test_a_var_scope_works_with_async_with() -> None:
    async def inside() -> str:
        async with _Label("x"):
            return _LABEL.get()

    assert asyncio.run(inside()) == "outside/x"
    assert _LABEL.get() == "outside"


@pytest.mark.parametrize(
    ("make", "kind"),
    [(lambda: _Label("a"), "label"), (lambda: deadline(5), "deadline"),
     (lambda: run("order-1"), "run"), (lambda: resilient(max_attempts=2), "resilient")],
)
def test_no_scope_can_be_entered_twice_at_once(make: object, kind: str) -> None:
    scope = make()  # type: ignore[operator]
    with scope:
        with pytest.raises(RuntimeError, match=f"a {kind} scope cannot be entered twice"):
            scope.__enter__()
    assert _LABEL.get() == "outside"
    assert current_deadline() is None and current_run() == ()
    assert effective_policy(Policy()).max_attempts == Policy().max_attempts


def test_resilient_with_a_deadline_sets_and_restores_both() -> None:
    base = Policy()
    with resilient(max_attempts=2, deadline=5):
        assert effective_policy(base).max_attempts == 2
        assert current_deadline() is not None
        with resilient(max_attempts=3):
            assert effective_policy(base).max_attempts == 3
        assert effective_policy(base).max_attempts == 2
    assert effective_policy(base) is base
    assert current_deadline() is None


@pytest.mark.parametrize("value", [-1, 0, float("inf"), "soon", True])
def test_a_bad_deadline_of_resilient_is_a_config_error_at_decoration(value: object) -> None:
    from resilient_llm import ConfigError

    with pytest.raises(ConfigError, match=r"resilient\(deadline=\.\.\.\)=.* is invalid"):
        resilient(deadline=value)  # type: ignore[arg-type]


def test_a_bad_setting_of_resilient_is_a_config_error_at_decoration() -> None:
    from resilient_llm import ConfigError

    with pytest.raises(ConfigError, match="max_attempts"):
        resilient(max_attempts=0)
    with pytest.raises(ConfigError, match="did you mean cache_secret"):
        resilient(cache_secrett="a-secret-nobody-may-see")
