"""``attributes(...)``: scopes, the decorator, validation, and what calls inside carry."""

from __future__ import annotations

import contextvars
import threading
from typing import Any

import anyio
import anyio.lowlevel
import httpx2
import pytest

from resilient_llm import outcome
from resilient_llm.context.attributes import (
    MAX_ATTRIBUTES,
    MAX_VALUE_LENGTH,
    Attributes,
    attributes,
    current_attributes,
)
from resilient_llm.events.outcome import lookup
from resilient_llm.openai import OpenAI
from resilient_llm.testing import FakeClock, FaultProvider
from tests.conftest import Otel


def test_scope_sets_and_restores() -> None:
    assert dict(current_attributes()) == {}
    with attributes(feature="search", tenant="acme") as scope:
        assert isinstance(scope, Attributes)
        assert dict(current_attributes()) == {"feature": "search", "tenant": "acme"}
    assert dict(current_attributes()) == {}


def test_nested_scopes_merge_and_the_inner_value_wins() -> None:
    with attributes(feature="search", tenant="acme"):
        with attributes(tenant="globex", app_version="1.2"):
            assert dict(current_attributes()) == {
                "feature": "search", "tenant": "globex", "app_version": "1.2"}
        assert dict(current_attributes()) == {"feature": "search", "tenant": "acme"}


def test_one_scope_object_may_be_entered_again() -> None:
    scope = attributes(feature="a")
    with scope, scope:
        assert current_attributes()["feature"] == "a"
    assert dict(current_attributes()) == {}


def test_the_mapping_is_read_only() -> None:
    with attributes(feature="a"):
        current = current_attributes()
        with pytest.raises(TypeError):
            current["feature"] = "b"  # type: ignore[index]


def test_decorator_on_sync_and_async_functions() -> None:
    @attributes(feature="sync")
    def sync_work(x: int) -> tuple[int, dict[str, str]]:
        return x + 1, dict(current_attributes())

    @attributes(feature="async")
    async def async_work() -> dict[str, str]:
        await anyio.lowlevel.checkpoint()
        return dict(current_attributes())

    assert sync_work(1) == (2, {"feature": "sync"})
    assert sync_work.__name__ == "sync_work"
    assert anyio.run(async_work) == {"feature": "async"}
    assert dict(current_attributes()) == {}


def test_async_with() -> None:
    async def main() -> dict[str, str]:
        async with attributes(tenant="acme"):
            return dict(current_attributes())

    assert anyio.run(main) == {"tenant": "acme"}


def test_scopes_follow_the_context_not_the_thread() -> None:
    seen: dict[str, Any] = {}
    with attributes(feature="outer"):
        plain = threading.Thread(target=lambda: seen.update(plain=dict(current_attributes())))
        context = contextvars.copy_context()
        copied = threading.Thread(
            target=lambda: seen.update(copied=context.run(lambda: dict(current_attributes()))))
        for thread in (plain, copied):
            thread.start()
            thread.join()
    assert seen == {"plain": {}, "copied": {"feature": "outer"}}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"bad key": "x"}, "attribute name 'bad key' is not accepted"),
        ({"9lives": "x"}, "starting with a letter"),
        ({"gen_ai.request.model": "x"}, "namespace resilient-llm writes itself"),
        ({"resilient_llm.degraded": "x"}, "app.degraded"),
        ({"tenant": 42}, "must be a string, not int"),
        ({"tenant": None}, "must be a string, not NoneType"),
        ({"tenant": "x" * (MAX_VALUE_LENGTH + 1)}, f"at most {MAX_VALUE_LENGTH}"),
    ],
)
def test_invalid_attributes_are_refused_at_once(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match="attribute") as info:
        attributes(**values)
    assert message in str(info.value)


def test_too_many_attributes_in_force() -> None:
    half = {f"k{i}": "v" for i in range(MAX_ATTRIBUTES)}
    with attributes(**half), pytest.raises(ValueError, match=f"at most {MAX_ATTRIBUTES}"):
        attributes(extra="v").__enter__()
    assert dict(current_attributes()) == {}


def test_repr_names_the_values() -> None:
    assert repr(attributes(feature="search")) == "attributes(feature='search')"


# --- on calls ------------------------------------------------------------------------------------


def test_every_call_inside_carries_them_on_its_span_metrics_and_record(otel: Otel) -> None:
    exporter, reader = otel.exporter, otel.reader
    provider = FaultProvider()
    client = OpenAI(api_key="sk-attr", base_url="http://attributes.test/v1",
                    http_client=httpx2.Client(transport=provider.transport()))
    client._resilient_clock = FakeClock()

    @attributes(feature="search")
    def search() -> Any:
        with attributes(tenant="acme"):
            return client.chat.completions.create(
                model="gpt-4.1", messages=[{"role": "user", "content": "hi"}])

    with client:
        answer = search()
        client.chat.completions.create(model="gpt-4.1",
                                       messages=[{"role": "user", "content": "outside"}])
    spans = [s for s in exporter.get_finished_spans() if s.name == "chat gpt-4.1"]
    assert [(s.attributes or {}).get("tenant") for s in spans] == ["acme", None]
    assert (spans[0].attributes or {})["feature"] == "search"
    data = reader.get_metrics_data()
    assert data is not None
    durations = [point.attributes for r in data.resource_metrics for sc in r.scope_metrics
                 for m in sc.metrics if m.name == "gen_ai.client.operation.duration"
                 for point in m.data.data_points]
    tagged = [a for a in durations if a and a.get("feature") == "search"]
    assert len(tagged) == 1 and tagged[0]["tenant"] == "acme"
    record = lookup(answer)
    assert record is not None and dict(record.attributes) == {"feature": "search",
                                                              "tenant": "acme"}
    assert outcome(answer).served_by == "gpt-4.1"
