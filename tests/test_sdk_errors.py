"""resilient-llm's errors are the official SDK's errors too: handlers written for the official
client (``except openai.RateLimitError``, ``except anthropic.APIConnectionError``) catch
them, and everything of resilient-llm's own error still holds."""

from __future__ import annotations

import pickle
from typing import Any

import anthropic
import anyio
import httpx2
import openai
import pytest

from resilient_llm import (
    AllTargetsFailed,
    CircuitOpen,
    ConfigError,
    DeadlineExceeded,
    Policy,
    ResidencyViolation,
    ResilientLLMError,
    ResponseTooLarge,
    StreamInterrupted,
)
from resilient_llm._sdk_errors import as_sdk_error
from resilient_llm.anthropic import Anthropic, AsyncAnthropic
from resilient_llm.dropin.errors import translate_error
from resilient_llm.openai import AsyncOpenAI, OpenAI
from resilient_llm.testing import Fault, FaultProvider

GPT, CLAUDE = "gpt-4.1", "claude-sonnet-4-6"
MESSAGES: Any = [{"role": "user", "content": "hi"}]
SDKS = {"openai": openai, "anthropic": anthropic}


def is_all(error: object, *classes: type) -> bool:
    """``isinstance`` for each class, without narrowing the error to one of them (it is both)."""
    return all(isinstance(error, cls) for cls in classes)


def client(provider: FaultProvider, sdk: str, *, is_async: bool = False, **kwargs: Any) -> Any:
    http = (httpx2.AsyncClient if is_async else httpx2.Client)(transport=provider.transport())
    if sdk == "openai":
        cls: Any = AsyncOpenAI if is_async else OpenAI
        return cls(base_url="http://fault.test/v1", api_key="k", http_client=http, **kwargs)
    cls = AsyncAnthropic if is_async else Anthropic
    return cls(base_url="http://fault.test", api_key="k", http_client=http, **kwargs)


def create(c: Any, sdk: str, **kwargs: Any) -> Any:
    if sdk == "openai":
        return c.chat.completions.create(model=GPT, messages=MESSAGES, **kwargs)
    return c.messages.create(model=CLAUDE, max_tokens=8, messages=MESSAGES, **kwargs)


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_a_retry_after_past_the_deadline_is_the_sdks_rate_limit_error(sdk: str) -> None:
    """The official client raises its RateLimitError at once here; so does the drop-in (as a
    DeadlineExceeded too: the wait it would need ends past the deadline)."""
    provider = FaultProvider()
    provider.script(Fault.status(429, headers={"retry-after": "3600"}))
    module = SDKS[sdk]
    with client(provider, sdk) as c, pytest.raises(module.RateLimitError) as info:
        create(c, sdk)
    error: Any = info.value  # both types: attributes of each
    assert is_all(error, DeadlineExceeded, TimeoutError)
    assert type(error).__name__ == "DeadlineExceeded" and type(error).__module__ == "resilient_llm"
    assert error.status_code == 429 and error.response.headers["retry-after"] == "3600"
    assert error.message == str(error) and "deadline" in str(error)
    assert len(error.attempts) == 1 and error.budget == 600.0
    assert isinstance(error.cause, module.RateLimitError)  # the SDK's own, as before


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_every_target_failing_is_the_sdks_error_of_the_last_answer(sdk: str) -> None:
    provider = FaultProvider(default=Fault.status(500))
    fallbacks = {GPT: ["gpt-4.1-mini"], CLAUDE: ["claude-haiku-4-5"]}
    module = SDKS[sdk]
    with client(provider, sdk, policy=Policy(fallbacks=fallbacks, max_attempts=2,
                                             max_backoff=0.01)) as c, \
            pytest.raises(module.InternalServerError) as info:
        create(c, sdk)
    error: Any = info.value
    assert is_all(error, AllTargetsFailed) and error.status_code == 500
    assert all(isinstance(cause, module.InternalServerError)
               for cause in error.causes.values())


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_a_stream_broken_after_output_is_the_sdks_connection_error(
    sdk: str, is_async: bool,
) -> None:
    """Mid-stream, the official client raises its connection error: handlers around stream
    loops catch StreamInterrupted as one, with the partial text on it."""
    provider = FaultProvider()
    provider.script(Fault.stream_cut(after_events=5))
    module = SDKS[sdk]
    policy = Policy(stream_recovery="off")

    def sync() -> BaseException:
        with client(provider, sdk, policy=policy) as c:
            try:
                for _ in create(c, sdk, stream=True):
                    pass
            except module.APIConnectionError as error:
                return error  # type: ignore[no-any-return]
        raise AssertionError("the stream did not fail")

    async def main() -> BaseException:
        async with client(provider, sdk, is_async=True, policy=policy) as c:
            try:
                async for _ in await create(c, sdk, stream=True):
                    pass
            except module.APIConnectionError as error:
                return error  # type: ignore[no-any-return]
        raise AssertionError("the stream did not fail")

    error: Any = anyio.run(main) if is_async else sync()
    assert is_all(error, StreamInterrupted) and error.partial_text
    assert not isinstance(error, module.APITimeoutError)
    assert isinstance(error.request, httpx2.Request)


def test_a_stalled_stream_is_the_sdks_timeout_error() -> None:
    provider = FaultProvider()
    provider.script(Fault.stream_stall(after_events=4))
    policy = Policy(stream_recovery="off", stream_idle_timeout=0.2)
    with provider.serve() as server, \
            OpenAI(base_url=server.openai_base_url, api_key="k", policy=policy) as c, \
            pytest.raises(openai.APITimeoutError) as info:
        for _ in create(c, "openai", stream=True):
            pass
    assert isinstance(info.value, StreamInterrupted)
    assert info.value.failure == "stream_stall"


def test_an_open_circuit_is_the_sdks_error_of_its_cause_or_a_connection_error() -> None:
    request = httpx2.Request("POST", "http://fault.test/v1/chat/completions")
    response = httpx2.Response(503, request=request, json={"error": {"type": "server_error"}})
    errors: dict[str, Any] = {
        "status_error": lambda r: openai.InternalServerError("down", response=r, body=None),
        "timeout_error": lambda r: openai.APITimeoutError(request=r),
        "connection_error": lambda r: openai.APIConnectionError(request=r),
        "provider": "openai",
    }
    with_cause = CircuitOpen("circuit open for gpt-4.1", target="gpt-4.1")
    with_cause.__cause__ = httpx2.HTTPStatusError("503", request=request, response=response)
    typed: Any = translate_error(with_cause, **errors)
    assert is_all(typed, openai.InternalServerError, CircuitOpen)
    assert typed.status_code == 503 and typed.target == "gpt-4.1"
    bare: Any = translate_error(CircuitOpen("circuit open", target="gpt-4.1"), **errors)
    assert is_all(bare, openai.APIConnectionError) and bare.request is None
    assert not isinstance(bare, openai.APITimeoutError)


def test_errors_that_are_not_a_providers_keep_their_own_type() -> None:
    from resilient_llm import ConfigError

    error = ConfigError("RESILIENT_LLM_DEADLINE", "soon", "expected seconds")
    never: Any = print  # not called: nothing to translate
    assert translate_error(error, status_error=never, timeout_error=never,
                           connection_error=never, provider="openai") is error
    assert not isinstance(error, openai.APIError)


def test_a_typed_error_pickles_as_both_and_retypes_without_stacking() -> None:
    error: Any = as_sdk_error(DeadlineExceeded("late", budget=3.0), provider="openai")
    assert is_all(error, openai.APITimeoutError)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and copy.budget == 3.0 and str(copy) == "late"
    response = httpx2.Response(429, request=httpx2.Request("POST", "http://x"))
    like = openai.RateLimitError("slow down", response=response, body=None)
    retyped = as_sdk_error(error, like)
    assert is_all(retyped, openai.RateLimitError)
    assert not is_all(retyped, openai.APITimeoutError)  # the SDK part is replaced
    assert type(retyped).__mro__[1] is DeadlineExceeded


def test_without_the_sdk_there_is_nothing_to_mirror() -> None:
    error = as_sdk_error(DeadlineExceeded("late"), provider="some-other-sdk")
    assert type(error) is DeadlineExceeded
    assert isinstance(error, ResilientLLMError)


OWN_ERRORS = [
    AllTargetsFailed("every target failed", causes={"m": ValueError("boom")}),
    CircuitOpen("the circuit is open", target="m", retry_at=3.0),
    StreamInterrupted("broke", partial_text="Hel", failure="stream_cut"),
    ConfigError("RESILIENT_LLM_DEADLINE", -1, "a positive number of seconds"),
    ResidencyViolation("outside the allowed regions", target="m", region="us-east-1"),
    ResponseTooLarge("too large", limit=65536),
    DeadlineExceeded("late", budget=2.0),
]


@pytest.mark.parametrize("error", OWN_ERRORS, ids=lambda e: type(e).__name__)
def test_our_own_errors_survive_pickling(error: ResilientLLMError) -> None:
    """Errors whose constructors take keyword-only arguments could not be rebuilt: a
    ``multiprocessing.Pool`` whose worker raised one hung, a ``ProcessPoolExecutor`` broke."""
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error)
    assert {k: repr(v) for k, v in vars(copy).items()} == \
        {k: repr(v) for k, v in vars(error).items()}


def _raise_circuit_open() -> None:
    raise CircuitOpen("the circuit is open", target="m", retry_at=1.0)


def test_a_process_pool_hands_our_error_back_to_its_parent() -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool, \
            pytest.raises(CircuitOpen) as caught:
        pool.submit(_raise_circuit_open).result(timeout=60)
    assert caught.value.target == "m" and caught.value.retry_at == 1.0


@pytest.mark.parametrize("flavor", ["openai", "anthropic"])
@pytest.mark.parametrize("recovery", ["off", "continue"])
def test_an_error_event_after_output_raises_the_sdks_error_for_it(flavor: str,
                                                                  recovery: str) -> None:
    """The official clients raise their own error for an error event in a stream (OpenAI:
    ``APIError`` with the event's error as ``body``; Anthropic: ``APIStatusError`` for the 200
    response, the event as ``body``). The drop-ins' ``StreamInterrupted`` for it, recovery off
    or failed, is that error too (before: the SDK's connection error)."""
    results = []
    for official in (True, False):
        provider = FaultProvider()
        provider.default = Fault.error_event(after_events=4)
        http = httpx2.Client(transport=provider.transport())
        policy = Policy(deadline=10, stream_recovery=recovery, max_attempts=2)
        if flavor == "openai":
            client: Any = openai.OpenAI(base_url="http://f.test/v1", api_key="k",
                                        http_client=http, max_retries=0) if official else \
                OpenAI(base_url="http://f.test/v1", api_key="k", http_client=http, policy=policy)
            base: Any = openai.APIError
            stream = client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
        else:
            client = anthropic.Anthropic(base_url="http://f.test", api_key="k",
                                         http_client=http, max_retries=0) if official else \
                Anthropic(base_url="http://f.test", api_key="k", http_client=http, policy=policy)
            base = anthropic.APIStatusError
            stream = client.messages.create(model="m", max_tokens=50, stream=True,
                                            messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(base) as caught:
            for _ in stream:
                pass
        error = caught.value
        results.append((error.body, getattr(error, "status_code", None)))
        if not official:
            assert isinstance(error, StreamInterrupted) and error.partial_text
    assert results[1] == results[0]
