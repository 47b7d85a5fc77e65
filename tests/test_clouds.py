"""The cloud client classes (Azure, Bedrock, Vertex, Foundry, AWS, Google Cloud, Mantle) as
drop-ins: every public client class of the installed SDKs has one, with the official
constructor, and each one, sync and async, retries a throttle in its cloud's own error shape
under one deadline, or behaves exactly like the official class when disabled.

The requests go through the SDKs' own request building (deployment paths, ``api-version``,
Bedrock ``/model/{id}/invoke``, Vertex ``:rawPredict``) to an in-process transport that answers
them; nothing leaves the process.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable
from typing import Any

import anthropic
import anyio
import httpx2
import openai
import pytest

import resilient_llm.anthropic as anthropic_dropin
import resilient_llm.openai as openai_dropin
from resilient_llm import Policy, ResilientTransport, outcome
from resilient_llm.dropin.clouds import MissingClientClass, missing_class
from resilient_llm.testing import FakeClock, FakeRandom

CHAT = {"id": "c1", "object": "chat.completion", "created": 0, "model": "gpt-4.1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                     "finish_reason": "stop"}]}
MESSAGE = {"id": "m1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",
           "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
           "usage": {"input_tokens": 1, "output_tokens": 1}}

#: Constructor arguments per cloud class that need no cloud account (bearer keys or tokens).
KWARGS: dict[str, dict[str, Any]] = {
    "AzureOpenAI": {"api_key": "k", "api_version": "2024-10-21",
                    "azure_endpoint": "https://eastus.example.test"},
    "BedrockOpenAI": {"api_key": "k", "aws_region": "us-east-1"},
    "AnthropicBedrock": {"api_key": "k", "aws_region": "us-east-1"},
    "AnthropicBedrockMantle": {"api_key": "k", "aws_region": "us-east-1"},
    "AnthropicAWS": {"api_key": "k", "aws_region": "us-east-1", "workspace_id": "w"},
    "AnthropicVertex": {"region": "us-east5", "project_id": "p", "access_token": "t"},
    "AnthropicGoogleCloud": {"project": "p", "location": "us-east5", "workspace_id": "w",
                             "skip_auth": True},
    "AnthropicFoundry": {"resource": "r", "api_key": "k"},
}

#: Each cloud's throttle, in its own error shape (status, headers, body).
THROTTLES: dict[str, tuple[int, dict[str, str], dict[str, Any]]] = {
    "AzureOpenAI": (429, {"retry-after-ms": "10", "x-ms-region": "East US"},
                    {"error": {"code": "429", "message": "Requests to the ChatCompletions_Create "
                               "Operation have exceeded call rate limit."}}),
    "BedrockOpenAI": (429, {"x-amzn-errortype": "ThrottlingException:http://internal.amazon.com/"},
                      {"message": "Too many requests, please wait before trying again."}),
    "AnthropicBedrock": (429, {"x-amzn-errortype": "ThrottlingException"},
                         {"message": "Too many tokens, please wait before trying again."}),
    "AnthropicBedrockMantle": (429, {"x-amzn-errortype": "ThrottlingException"},
                               {"message": "Too many requests."}),
    "AnthropicAWS": (429, {}, {"type": "error", "error": {"type": "rate_limit_error",
                                                          "message": "slow down"}}),
    "AnthropicVertex": (429, {}, {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
                                            "message": "Quota exceeded for aiplatform."}}),
    "AnthropicGoogleCloud": (429, {}, {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
                                                 "message": "Quota exceeded."}}),
    "AnthropicFoundry": (429, {"retry-after": "1"},
                         {"error": {"code": "RateLimitReached", "message": "Rate limit."}}),
}

SYNC_NAMES = sorted(KWARGS)


def official_client_classes(sdk: Any) -> list[str]:
    """Every public client class of ``sdk`` (a class whose ancestry holds the SDK's client
    base), sync and async; aliases (``openai.Client``) are left out."""
    found = []
    for name in dir(sdk):
        obj = getattr(sdk, name)
        if name.startswith("_") or not isinstance(obj, type) or obj.__name__ != name:
            continue
        if "BaseClient" in {k.__name__ for k in obj.__mro__[1:]}:
            found.append(name)
    return sorted(found)


def sdk_of(name: str) -> tuple[Any, Any]:
    return (openai, openai_dropin) if "OpenAI" in name else (anthropic, anthropic_dropin)


def answer(name: str) -> dict[str, Any]:
    return CHAT if "OpenAI" in name else MESSAGE


class Script:
    """A transport handler that answers with the scripted responses, then with successes."""

    def __init__(self, name: str, *first: httpx2.Response) -> None:
        self.name = name
        self.pending = list(first)
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        if self.pending:
            return self.pending.pop(0)
        return httpx2.Response(200, json=answer(self.name))


def throttle(name: str) -> httpx2.Response:
    status, headers, body = THROTTLES[name]
    return httpx2.Response(status, headers=headers, content=json.dumps(body).encode())


def make(name: str, handler: Callable[[httpx2.Request], httpx2.Response], *,
         is_async: bool = False, **kwargs: Any) -> Any:
    _, dropin = sdk_of(name)
    cls_name = f"Async{name}" if is_async else name
    http = (httpx2.AsyncClient if is_async else httpx2.Client)(
        transport=httpx2.MockTransport(handler))
    client = getattr(dropin, cls_name)(http_client=http, **KWARGS[name], **kwargs)
    client._resilient_clock = FakeClock()
    client._resilient_rng = FakeRandom(0)
    return client


def create(client: Any, name: str) -> Any:
    if "OpenAI" in name:
        return client.chat.completions.create(
            model="gpt-4.1", messages=[{"role": "user", "content": "hi"}])
    return client.messages.create(model="claude-sonnet-4-6", max_tokens=8,
                                  messages=[{"role": "user", "content": "hi"}])


# --- one drop-in per official client class ---------------------------------------------------


@pytest.mark.parametrize("sdk,dropin", [(openai, openai_dropin), (anthropic, anthropic_dropin)])
def test_every_public_client_class_has_a_drop_in(sdk: Any, dropin: Any) -> None:
    names = official_client_classes(sdk)
    assert len(names) >= 4
    for name in names:
        ours, official = getattr(dropin, name), getattr(sdk, name)
        assert name in dropin.__all__
        assert issubclass(ours, official) and ours.__name__ == name
        assert ours.__module__ == dropin.__name__ and ours.__doc__
        params = inspect.signature(ours).parameters
        assert list(params)[:-1] == list(inspect.signature(official).parameters), name
        assert params["policy"].kind is inspect.Parameter.KEYWORD_ONLY
        copy_params = inspect.signature(ours.copy).parameters
        assert "policy" in copy_params and ours.with_options is ours.copy


@pytest.mark.parametrize("sdk,dropin", [(openai, openai_dropin), (anthropic, anthropic_dropin)])
def test_the_official_aliases_name_the_drop_ins(sdk: Any, dropin: Any) -> None:
    for alias in ("Client", "AsyncClient"):  # openai.Client is openai.OpenAI
        official = getattr(sdk, alias)
        assert getattr(dropin, alias) is getattr(dropin, official.__name__)
        assert alias in dropin.__all__


def test_the_test_table_covers_every_cloud_class() -> None:
    clouds = {n.removeprefix("Async") for sdk in (openai, anthropic)
              for n in official_client_classes(sdk)} - {"OpenAI", "Anthropic"}
    assert clouds == set(KWARGS)


def test_a_class_the_sdk_lacks_is_a_clear_import_error() -> None:
    error = missing_class("resilient_llm.anthropic", anthropic, {"AnthropicMars": "9.0.0"},
                          "AnthropicMars")
    assert isinstance(error, MissingClientClass) and isinstance(error, ImportError)
    assert f"anthropic {anthropic.__version__} has no AnthropicMars" in str(error)
    assert "anthropic >= 9.0.0" in str(error)
    plain = missing_class("resilient_llm.anthropic", anthropic, {}, "nothing_here")
    assert type(plain) is AttributeError
    with pytest.raises(AttributeError):
        anthropic_dropin.nothing_here  # noqa: B018 - any other missing name: AttributeError
    assert not hasattr(openai_dropin, "nothing_here")


def test_positional_constructor_arguments_are_the_official_ones() -> None:
    # AnthropicBedrock's constructor takes its AWS settings by position too
    client = anthropic_dropin.AnthropicBedrock(None, None, "eu-west-1", api_key="k")
    assert client.aws_region == "eu-west-1"
    with pytest.raises(TypeError, match="multiple values for argument 'aws_region'"):
        anthropic_dropin.AnthropicBedrock(None, None, "eu-west-1", aws_region="us-east-1")
    with pytest.raises(TypeError, match="at most 0 positional arguments"):
        anthropic_dropin.AnthropicVertex("europe-west1", access_token="t")


# --- each class, sync and async: a throttle in the cloud's shape is retried ----------------------


@pytest.mark.parametrize("name", SYNC_NAMES)
def test_a_cloud_throttle_is_retried_under_one_key(name: str) -> None:
    script = Script(name, throttle(name))
    with make(name, script) as client:
        result = create(client, name)
    assert len(script.requests) == 2
    keys = {r.headers["idempotency-key"] for r in script.requests}
    assert len(keys) == 1
    record = outcome(result)
    assert [a.failure for a in record.attempts] == ["rate_limited", None]


@pytest.mark.parametrize("name", SYNC_NAMES)
def test_an_async_cloud_throttle_is_retried(name: str) -> None:
    script = Script(name, throttle(name))

    async def main() -> Any:
        async with make(name, script, is_async=True) as client:
            return await create(client, name)

    result = anyio.run(main)
    assert len(script.requests) == 2
    assert [a.failure for a in outcome(result).attempts] == ["rate_limited", None]


@pytest.mark.parametrize("name", SYNC_NAMES)
def test_disabled_is_the_official_class(name: str) -> None:
    fast = {"retry-after-ms": "1"}
    status, _, body = THROTTLES[name]
    script = Script(name, httpx2.Response(status, headers=fast, json=body))
    with make(name, script, policy=Policy(enabled=False)) as client:
        create(client, name)
        assert not any(isinstance(t, ResilientTransport)
                       for t in client._client._mounts.values())
    assert len(script.requests) == 2, "the SDK's own retry"
    assert all("idempotency-key" not in r.headers for r in script.requests)


@pytest.mark.parametrize("name", SYNC_NAMES)
def test_copies_keep_the_class_and_the_policy(name: str) -> None:
    policy = Policy(deadline=7)
    with make(name, Script(name), policy=policy) as client:
        copy = client.with_options(timeout=3)
        assert type(copy) is type(client) and copy.policy is policy
        assert client.copy(policy=Policy(deadline=9)).policy.deadline == 9


# --- the clouds' own failure shapes ---------------------------------------------------------------

AZURE_FILTER = {"error": {
    "code": "content_filter", "status": 400,
    "message": "The response was filtered due to the prompt triggering Azure's content policy.",
    "innererror": {"code": "ResponsibleAIPolicyViolation",
                   "content_filter_result": {"hate": {"filtered": True, "severity": "high"}}}}}


@pytest.mark.parametrize("status,headers,body,kind,code", [
    (429, {"x-amzn-errortype": "ThrottlingException:http://internal.amazon.com/coral/"},
     {"message": "Too many requests"}, "rate_limited", "ThrottlingException"),
    (429, {"x-amzn-errortype": "ModelNotReadyException"},
     {"message": "Model is not ready"}, "overloaded", "ModelNotReadyException"),
    (503, {"x-amzn-errortype": "ServiceUnavailableException"},
     {"Message": "Service unavailable"}, "overloaded", "ServiceUnavailableException"),
    (408, {"x-amzn-errortype": "ModelTimeoutException"}, {"message": "timed out"},
     "timeout", "ModelTimeoutException"),
    (400, {"x-amzn-errortype": "ValidationException"},
     {"message": "Input is too long for requested model."}, "context_length",
     "ValidationException"),
    (400, {"x-amzn-errortype": "ValidationException"}, {"message": "bad field"},
     "invalid_request", "ValidationException"),
    (403, {"x-amzn-errortype": "AccessDeniedException"}, {"message": "no"}, "auth",
     "AccessDeniedException"),
    (429, {}, {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
                         "message": "Quota exceeded for aiplatform.googleapis.com"}},
     "rate_limited", "RESOURCE_EXHAUSTED"),
    (503, {}, {"error": {"code": 503, "status": "UNAVAILABLE", "message": "try later"}},
     "overloaded", "UNAVAILABLE"),
    (400, {}, AZURE_FILTER, "content_policy", "ResponsibleAIPolicyViolation"),
    (404, {}, {"error": {"code": "DeploymentNotFound", "message": "The API deployment for "
                         "this resource does not exist."}}, "invalid_request",
     "DeploymentNotFound"),
    (429, {"retry-after-ms": "250", "x-ratelimit-remaining-requests": "0"},
     {"error": {"code": "429", "message": "Rate limit is exceeded."}}, "rate_limited", "429"),
])
def test_cloud_error_shapes_are_classified(status: int, headers: dict[str, str],
                                           body: dict[str, Any], kind: str, code: str) -> None:
    from resilient_llm.engine.classify import classify_status

    failure = classify_status(status, httpx2.Headers(headers), json.dumps(body).encode())
    assert failure is not None
    assert (failure.kind.value, failure.code) == (kind, code)
    if "retry-after-ms" in headers:
        assert failure.retry_after == 0.25


@pytest.mark.parametrize("name", ["AzureOpenAI", "AnthropicBedrock"])
def test_a_content_filter_or_validation_error_is_sent_once(name: str) -> None:
    bad = (httpx2.Response(400, json=AZURE_FILTER) if name == "AzureOpenAI" else
           httpx2.Response(400, headers={"x-amzn-errortype": "ValidationException"},
                           json={"message": "messages: field required"}))
    script = Script(name, bad)
    sdk, _ = sdk_of(name)
    with make(name, script) as client, pytest.raises(sdk.BadRequestError):
        create(client, name)
    assert len(script.requests) == 1


# --- signatures: made per attempt, for the host, region and time each attempt goes to ----------

AWS_KEYS = {"AnthropicBedrock": {"aws_access_key": "AKIDEXAMPLE", "aws_secret_key": "s3cr3t",
                                 "aws_region": "us-east-1"},
            "BedrockOpenAI": {"aws_access_key_id": "AKIDEXAMPLE",
                              "aws_secret_access_key": "s3cr3t", "aws_region": "us-east-1"}}


class Recorder(Script):
    """A :class:`Script` that keeps what each attempt sent as it was sent (the transport
    re-sends one request object, re-signed in place)."""

    def __init__(self, name: str, *first: httpx2.Response) -> None:
        super().__init__(name, *first)
        self.sent: list[tuple[str, dict[str, str], bytes]] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.sent.append((str(request.url), dict(request.headers), request.content))
        return super().__call__(request)


def sigv4_check(url: str, headers: dict[str, str], body: bytes) -> tuple[bool, str]:
    """(whether the request's SigV4 signature is valid for exactly what was sent, the region
    its scope names), recomputed with botocore from the received URL, signed headers, body
    and ``x-amz-date``."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    fields = dict(part.strip().split("=", 1) for part in
                  headers["authorization"].removeprefix("AWS4-HMAC-SHA256 ").split(","))
    _, _, region, service, _ = fields["Credential"].split("/")
    signed = fields["SignedHeaders"].split(";")
    request = AWSRequest(method="POST", url=url, data=body,
                         headers={name: headers[name] for name in signed})
    request.context["timestamp"] = headers["x-amz-date"]
    signer = SigV4Auth(Credentials("AKIDEXAMPLE", "s3cr3t"), service, region)
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)),
                                request)
    return expected == fields["Signature"], region


@pytest.mark.parametrize("name", sorted(AWS_KEYS))
def test_every_attempt_is_signed_afresh_for_what_it_sends(name: str) -> None:
    script = Recorder(name, throttle(name), throttle(name))
    _, dropin = sdk_of(name)
    http = httpx2.Client(transport=httpx2.MockTransport(script))
    client = getattr(dropin, name)(http_client=http, **AWS_KEYS[name])
    client._resilient_clock, client._resilient_rng = FakeClock(), FakeRandom(0)
    with client:
        create(client, name)
    assert len(script.sent) == 3
    signatures = set()
    for index, (url, headers, body) in enumerate(script.sent):
        assert sigv4_check(url, headers, body) == (True, "us-east-1")
        assert headers["x-stainless-retry-count"] == str(index)  # signed with its own count
        assert "x-stainless-retry-count" in headers["authorization"]
        signatures.add(headers["authorization"])
    assert len(signatures) == 3, "no attempt re-sends another attempt's signature"


def test_the_clients_own_region_keeps_its_own_endpoint() -> None:
    """An entry for the client's own region does not move its calls: its base URL (a proxy,
    a VPC endpoint, another resource in that region) serves them; the map sends elsewhere
    only the targets of other regions."""
    own, eu = "https://proxy.internal.example", "https://bedrock-runtime.eu-west-1.amazonaws.com"
    policy = Policy(fallbacks={"anthropic.claude-a": ["anthropic.claude-a@eu-west-1"]},
                    region_endpoints={"us-east-1": "https://elsewhere.example", "eu-west-1": eu})
    name = "AnthropicBedrock"
    script = Recorder(name, httpx2.Response(
        503, headers={"x-amzn-errortype": "ServiceUnavailableException"},
        json={"message": "Service unavailable"}))
    client = anthropic_dropin.AnthropicBedrock(
        http_client=httpx2.Client(transport=httpx2.MockTransport(script)), policy=policy,
        base_url=own, **AWS_KEYS[name])
    client._resilient_clock, client._resilient_rng = FakeClock(), FakeRandom(0)
    with client:
        client.messages.create(model="anthropic.claude-a", max_tokens=8,
                               messages=[{"role": "user", "content": "hi"}])
    (first_url, _, _), (url, _, _) = script.sent
    assert first_url == f"{own}/model/anthropic.claude-a/invoke"
    assert url == f"{eu}/model/anthropic.claude-a/invoke"


def test_a_fallback_to_another_region_is_signed_for_that_region_and_host() -> None:
    eu = "https://bedrock-runtime.eu-west-1.amazonaws.com"
    policy = Policy(fallbacks={"anthropic.claude-a": ["anthropic.claude-b@eu-west-1"]},
                    region_endpoints={"eu-west-1": eu})
    name = "AnthropicBedrock"
    script = Recorder(name, httpx2.Response(
        503, headers={"x-amzn-errortype": "ServiceUnavailableException"},
        json={"message": "Service unavailable"}))
    http = httpx2.Client(transport=httpx2.MockTransport(script))
    client = anthropic_dropin.AnthropicBedrock(http_client=http, policy=policy,
                                               **AWS_KEYS[name])
    client._resilient_clock, client._resilient_rng = FakeClock(), FakeRandom(0)
    with client:
        message = client.messages.create(model="anthropic.claude-a", max_tokens=8,
                                         messages=[{"role": "user", "content": "hi"}])
    (first_url, first, first_body), (url, headers, body) = script.sent
    assert first_url.endswith("/model/anthropic.claude-a/invoke")
    assert url == f"{eu}/model/anthropic.claude-b/invoke", "model in the path, eu host"
    assert "model" not in json.loads(body), "Bedrock names the model in the path only"
    assert headers["host"] == "bedrock-runtime.eu-west-1.amazonaws.com"
    assert sigv4_check(first_url, first, first_body) == (True, "us-east-1")
    assert sigv4_check(url, headers, body) == (True, "eu-west-1")
    assert headers["authorization"] != first["authorization"]
    result = outcome(message)
    assert result.served_by == "anthropic.claude-b" and result.degraded
    assert result.reason == "overloaded"
    assert [a.failure for a in result.attempts] == ["overloaded", None]


@pytest.mark.parametrize("name", ["AnthropicBedrock", "AnthropicVertex", "BedrockOpenAI"])
def test_residency_understands_the_cloud_region_and_fails_closed(name: str) -> None:
    from resilient_llm import ResidencyViolation

    script = Script(name)
    policy = Policy(allowed_regions=frozenset({"eu-west-1", "europe-west1"}))
    with make(name, script, policy=policy) as client, \
            pytest.raises(ResidencyViolation) as info:
        create(client, name)
    assert script.requests == [], "nothing is sent outside the allowed regions"
    assert info.value.region in ("us-east-1", "us-east5")
    eu = {"AnthropicVertex": {"region": "europe-west1"}}.get(name, {"aws_region": "eu-west-1"})
    _, dropin = sdk_of(name)
    http = httpx2.Client(transport=httpx2.MockTransport(script))
    with getattr(dropin, name)(http_client=http, policy=policy,
                               **{**KWARGS[name], **eu}) as allowed:
        create(allowed, name)
    assert len(script.requests) == 1


# --- over loopback: the deadline holds through a throttle, a hang and a stalled stream ----------

#: The classes whose wire paths the fault server answers (``.../chat/completions``,
#: ``.../messages``), with the base URL arguments that point them at it.
def loopback_kwargs(name: str, root: str) -> dict[str, Any]:
    table: dict[str, dict[str, Any]] = {
        "AzureOpenAI": {"api_key": "k", "api_version": "2024-10-21", "azure_endpoint": root},
        "BedrockOpenAI": {"api_key": "k", "aws_region": "us-east-1",
                          "base_url": root + "/openai/v1"},
        "AnthropicBedrockMantle": {"api_key": "k", "aws_region": "us-east-1",
                                   "base_url": root + "/anthropic"},
        "AnthropicAWS": {"api_key": "k", "aws_region": "us-east-1", "workspace_id": "w",
                         "base_url": root},
        "AnthropicFoundry": {"api_key": "k", "base_url": root + "/anthropic"},
        "AnthropicGoogleCloud": {"project": "p", "location": "us-east5", "workspace_id": "w",
                                 "skip_auth": True, "base_url": root},
        # the fault provider answers Bedrock's /model/{id}/invoke(-with-response-stream) and
        # Vertex's /v1/projects/{p}/locations/{region}/...:rawPredict (:streamRawPredict)
        "AnthropicBedrock": {"api_key": "k", "aws_region": "us-east-1", "base_url": root},
        "AnthropicVertex": {"region": "us-east5", "project_id": "p", "access_token": "t",
                            "base_url": root + "/v1"},
    }
    return table[name]


LOOPBACK = ["AzureOpenAI", "BedrockOpenAI", "AnthropicBedrockMantle", "AnthropicAWS",
            "AnthropicFoundry", "AnthropicGoogleCloud", "AnthropicBedrock", "AnthropicVertex"]
DEADLINE = 0.6
SLACK = 0.3  # the acceptance bound: deadline + 0.3 s


def faults() -> list[Any]:
    from resilient_llm.testing import Fault

    return [Fault.status(429, headers={"retry-after": "0.2"}), Fault.hang(),
            Fault.stream_stall(after_events=3, seconds=10.0)]


def call_streaming(client: Any, name: str, stream: bool) -> Any:
    if "OpenAI" in name:
        return client.chat.completions.create(
            model="gpt-4.1", messages=[{"role": "user", "content": "hi"}], stream=stream)
    return client.messages.create(model="claude-sonnet-4-6", max_tokens=64, stream=stream,
                                  messages=[{"role": "user", "content": "hi"}])


@pytest.mark.parametrize("name", LOOPBACK)
def test_the_deadline_holds_over_loopback(name: str, provider: Any, server: Any) -> None:
    from resilient_llm import DeadlineExceeded

    sdk, dropin = sdk_of(name)
    root = server.openai_base_url.rsplit("/v1", 1)[0]
    for fault in faults():
        provider.reset()
        provider.set_default(fault)
        stream = fault.kind == "stream_stall"
        with getattr(dropin, name)(policy=Policy(deadline=DEADLINE),
                                   **loopback_kwargs(name, root)) as client:
            started = time.monotonic()
            with pytest.raises((DeadlineExceeded, sdk.RateLimitError)) as info:
                result = call_streaming(client, name, stream)
                for _ in result:
                    pass
            took = time.monotonic() - started
        assert took <= DEADLINE + SLACK, (fault.kind, took)
        assert provider.requests, ("the cloud path reached the server", fault.kind, str(info.value))


@pytest.mark.parametrize("name", LOOPBACK)
def test_the_deadline_holds_over_loopback_async(name: str, provider: Any, server: Any) -> None:
    from resilient_llm import DeadlineExceeded

    sdk, dropin = sdk_of(name)
    root = server.openai_base_url.rsplit("/v1", 1)[0]

    async def one(stream: bool) -> float:
        async with getattr(dropin, f"Async{name}")(policy=Policy(deadline=DEADLINE),
                                                   **loopback_kwargs(name, root)) as client:
            started = time.monotonic()
            with pytest.raises((DeadlineExceeded, sdk.RateLimitError)):
                result = await call_streaming(client, name, stream)
                async for _ in result:
                    pass
            return time.monotonic() - started

    for fault in faults():
        provider.reset()
        provider.set_default(fault)
        took = anyio.run(one, fault.kind == "stream_stall")
        assert took <= DEADLINE + SLACK, (fault.kind, took)
        assert provider.requests


def test_a_vertex_model_version_is_part_of_the_model_not_a_region() -> None:
    from resilient_llm.engine.routing import Target

    assert Target.parse("claude-sonnet-4-5@20250929") == Target("claude-sonnet-4-5@20250929")
    assert Target.parse("claude-sonnet-4-5@20250929@europe-west1") == Target(
        "claude-sonnet-4-5@20250929", "europe-west1")
    name = "AnthropicVertex"
    script = Script(name, throttle(name))
    with make(name, script) as client:
        client.messages.create(model="claude-sonnet-4-5@20250929", max_tokens=8,
                               messages=[{"role": "user", "content": "hi"}])
    paths = [r.url.path for r in script.requests]
    path = ("/v1/projects/p/locations/us-east5/publishers/anthropic/models/"
            "claude-sonnet-4-5@20250929:rawPredict")
    assert paths == [path, path]
    assert all("model" not in json.loads(r.content) for r in script.requests)


def test_a_copy_of_a_subclass_without_policy_keeps_the_policy() -> None:
    class Legacy(openai_dropin.AzureOpenAI):
        def __init__(self, **kwargs: Any) -> None:  # made before policy= existed
            kwargs.pop("policy", None)
            super().__init__(**kwargs)

    policy = Policy(deadline=7)
    client = Legacy(**KWARGS["AzureOpenAI"])
    copied = client.copy(policy=policy)
    assert type(copied) is Legacy and copied.policy is policy


# --- Bedrock and Vertex over loopback: their own wire formats, streams included ----------------

REGIONAL = ["AnthropicBedrock", "AnthropicVertex"]
#: Each cloud's own name for its throttle, as the fault provider answers it.
THROTTLE_CODES = {"AnthropicBedrock": "ThrottlingException",
                  "AnthropicVertex": "RESOURCE_EXHAUSTED"}
#: A second region of each cloud, for fallbacks (and the endpoint argument it needs).
OTHER_REGION = {"AnthropicBedrock": "eu-west-1", "AnthropicVertex": "europe-west1"}


def regional(name: str, root: str, *, is_async: bool = False, **kwargs: Any) -> Any:
    cls = getattr(anthropic_dropin, f"Async{name}" if is_async else name)
    client = cls(**loopback_kwargs(name, root), **kwargs)
    client._resilient_rng = FakeRandom(0)
    return client


async def areceive(client: Any, stream: bool) -> Any:
    async with client:
        result = await call_streaming(client, "Anthropic", stream)
        if stream:
            async for _ in result:
                pass
        return result


def receive(client: Any, stream: bool, is_async: bool) -> Any:
    if is_async:
        return anyio.run(areceive, client, stream)
    with client:
        result = call_streaming(client, "Anthropic", stream)
        if stream:
            for _ in result:
                pass
        return result


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("name", REGIONAL)
def test_the_clouds_own_throttle_is_classified_as_a_throttle(
        name: str, stream: bool, is_async: bool, provider: Any, server: Any) -> None:
    from resilient_llm.testing import Fault

    provider.script(Fault.status(429, headers={"retry-after": "0.01"}))
    result = receive(regional(name, server.url, is_async=is_async), stream, is_async)
    # the server logs a stream's status once its last byte is out: the client may be done first
    first, second = provider.wait_for(lambda log: len(log) == 2 and log[1].ended_at is not None)
    assert first.status == 429 and second.status == 200
    paths = {"AnthropicBedrock": "/model/claude-sonnet-4-6/invoke",
             "AnthropicVertex": "/models/claude-sonnet-4-6:rawPredict"}
    expected = paths[name].replace("invoke", "invoke-with-response-stream").replace(
        ":rawPredict", ":streamRawPredict") if stream else paths[name]
    assert first.path.endswith(expected)
    record = outcome(result)
    assert [a.failure for a in record.attempts] == ["rate_limited", None]
    assert THROTTLE_CODES[name] in record.attempts[0].detail
    assert record.finished


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("fault,failure", [
    ("throttle", "rate_limited"), ("stream_error", "server_error"),
    ("unavailable", "overloaded"), ("crc", "stream_malformed"), ("cut", "stream_cut"),
    ("incomplete", "stream_incomplete"),
])
def test_a_bedrock_stream_that_fails_before_output_is_retried(
        fault: str, failure: str, is_async: bool, provider: Any, server: Any) -> None:
    from resilient_llm.testing import Fault

    faults = {
        "throttle": Fault.error_event(after_events=1, error_type="throttlingException"),
        "stream_error": Fault.error_event(after_events=1,
                                          error_type="modelStreamErrorException"),
        "unavailable": Fault.error_event(after_events=2),  # overloaded_error's Bedrock twin
        "crc": Fault.malformed_chunk(after_events=1),
        "cut": Fault.stream_cut(after_events=2),
        "incomplete": Fault.missing_terminator(after_events=2),
    }
    provider.script(faults[fault])
    result = receive(regional("AnthropicBedrock", server.url, is_async=is_async), True,
                     is_async)
    record = outcome(result)
    assert [a.failure for a in record.attempts] == [failure, None]
    assert record.finished and record.usage is not None
    assert provider.requests[0].path == "/model/claude-sonnet-4-6/invoke-with-response-stream"


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_a_bedrock_stream_broken_after_output_is_interrupted_with_its_text(
        is_async: bool, provider: Any, server: Any) -> None:
    from resilient_llm import StreamInterrupted
    from resilient_llm.testing import Fault

    provider.set_default(Fault.error_event(after_events=5, error_type="throttlingException"))
    with pytest.raises(StreamInterrupted) as info:
        receive(regional("AnthropicBedrock", server.url, is_async=is_async), True, is_async)
    assert info.value.failure == "rate_limited"
    assert info.value.partial_text and "Hello from the fault provider.".startswith(
        info.value.partial_text)
    assert len(provider.requests) == 1, "output had started: not sent again"


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("name", REGIONAL)
def test_a_fallback_to_another_region_serves_the_call(name: str, is_async: bool,
                                                      provider: Any, server: Any) -> None:
    from resilient_llm.testing import Fault, FaultProvider

    other = OTHER_REGION[name]
    provider.set_default(Fault.status(503))
    backup = FaultProvider()
    with backup.serve() as second:
        policy = Policy(fallbacks={"claude-sonnet-4-6": [f"claude-sonnet-4-6@{other}"]},
                        region_endpoints={other: second.url})
        result = receive(regional(name, server.url, is_async=is_async, policy=policy),
                         True, is_async)
        (served,) = backup.requests
    assert provider.requests and all(r.status == 503 for r in provider.requests)
    if name == "AnthropicVertex":  # the location in the path is the fallback's region
        assert f"/locations/{other}/" in served.path
    record = outcome(result)
    assert record.attempts[-1].failure is None and record.reason == "overloaded"
    assert record.served_region == other and record.degraded
    assert record.served_by == "claude-sonnet-4-6"


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("name", REGIONAL)
def test_residency_fails_closed_over_loopback(name: str, is_async: bool, provider: Any,
                                              server: Any) -> None:
    from resilient_llm import ResidencyViolation
    from resilient_llm.testing import Fault

    allowed = {"AnthropicBedrock": "eu-west-1", "AnthropicVertex": "europe-west1"}[name]
    policy = Policy(allowed_regions=frozenset({allowed}))
    with pytest.raises(ResidencyViolation) as info:
        receive(regional(name, server.url, is_async=is_async, policy=policy), False, is_async)
    assert info.value.region in ("us-east-1", "us-east5")
    assert provider.requests == [], "nothing is sent outside the allowed regions"
    # an allowed client whose only fallback is outside the set: the fallback is never used
    provider.set_default(Fault.status(503))
    region = {"AnthropicBedrock": {"aws_region": allowed},
              "AnthropicVertex": {"region": allowed}}[name]
    policy = Policy(allowed_regions=frozenset({allowed}),
                    fallbacks={"claude-sonnet-4-6": ["claude-sonnet-4-6@us-west-2"]},
                    region_endpoints={"us-west-2": server.url}, deadline=5)
    cls = getattr(anthropic_dropin, f"Async{name}" if is_async else name)
    client = cls(**{**loopback_kwargs(name, server.url), **region}, policy=policy)
    client._resilient_clock, client._resilient_rng = FakeClock(), FakeRandom(0)
    with pytest.raises(ResidencyViolation, match="us-west-2"):
        receive(client, False, is_async)
    assert all(f"/locations/{allowed}/" in r.path or "/model/" in r.path
               for r in provider.requests)
    assert "us-west-2" not in {r.headers.get("host", "") for r in provider.requests}


def test_a_same_model_fallback_to_another_region_is_named_in_outcome_and_span(otel: Any) -> None:
    eu = "https://bedrock-runtime.eu-west-1.amazonaws.com"
    model = "anthropic.claude-a"
    policy = Policy(fallbacks={model: [f"{model}@eu-west-1"]}, region_endpoints={"eu-west-1": eu})
    script = Recorder("AnthropicBedrock", httpx2.Response(
        429, headers={"x-amzn-errortype": "ThrottlingException", "retry-after": "30"},
        json={"message": "Too many requests"}))
    http = httpx2.Client(transport=httpx2.MockTransport(script))
    client = anthropic_dropin.AnthropicBedrock(http_client=http, policy=policy,
                                               **AWS_KEYS["AnthropicBedrock"])
    client._resilient_clock, client._resilient_rng = FakeClock(), FakeRandom(0)
    with client:
        message = client.messages.create(model=model, max_tokens=8,
                                         messages=[{"role": "user", "content": "hi"}])
    (_, _, _), (url, headers, body) = script.sent
    assert url == f"{eu}/model/{model}/invoke"
    assert sigv4_check(url, headers, body) == (True, "eu-west-1")
    result = outcome(message)
    assert (result.served_by, result.served_region) == (model, "eu-west-1")
    assert result.degraded and result.reason == "rate_limited"
    (span,) = otel.call_spans()
    attributes = dict(span.attributes or {})
    assert attributes["resilient_llm.served_region"] == "eu-west-1"
    assert attributes["resilient_llm.degraded"] is True


def test_a_call_served_in_its_own_region_is_not_degraded() -> None:
    script = Script("AnthropicBedrock", throttle("AnthropicBedrock"))
    with make("AnthropicBedrock", script) as client:
        result = outcome(create(client, "AnthropicBedrock"))
    assert result.served_region == "us-east-1" and not result.degraded


class Credentials:
    """google-auth credentials as the Vertex client uses them: a token that expires, refreshed
    by ``refresh`` (counted); ``expired`` follows the fake clock."""

    def __init__(self, clock: FakeClock, lifetime: float) -> None:
        self.clock, self.lifetime = clock, lifetime
        self.refreshes = 0
        self.token: str | None = None
        self.expiry = 0.0

    @property
    def expired(self) -> bool:
        return self.clock.now() >= self.expiry

    def refresh(self, request: Any) -> None:
        self.refreshes += 1
        self.token = f"token-{self.refreshes}"
        self.expiry = self.clock.now() + self.lifetime


def vertex_with(credentials: Credentials, script: Script, clock: FakeClock, **kwargs: Any) -> Any:
    http = httpx2.Client(transport=httpx2.MockTransport(script))
    client = anthropic_dropin.AnthropicVertex(region="us-east5", project_id="p",
                                              credentials=credentials,
                                              http_client=http, **kwargs)
    client._resilient_clock, client._resilient_rng = clock, FakeRandom(0)
    return client


def test_a_vertex_fallback_moves_the_location_and_host_and_is_authorised_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("anthropic.lib.vertex._client.refresh_auth",
                        lambda credentials: credentials.refresh(None))
    clock = FakeClock()
    credentials = Credentials(clock, lifetime=3600)
    policy = Policy(fallbacks={"claude-x": ["claude-x@europe-west1"]})
    script = Script("AnthropicVertex", httpx2.Response(503, json={"error": {
        "code": 503, "status": "UNAVAILABLE", "message": "The service is unavailable."}}))
    with vertex_with(credentials, script, clock, policy=policy) as client:
        message = client.messages.create(model="claude-x", max_tokens=8,
                                         messages=[{"role": "user", "content": "hi"}])
    first, second = script.requests
    assert first.url.host == "us-east5-aiplatform.googleapis.com"
    assert first.url.path == ("/v1/projects/p/locations/us-east5/publishers/anthropic/models/"
                              "claude-x:rawPredict")
    assert second.url.host == "europe-west1-aiplatform.googleapis.com"
    assert second.headers["host"] == "europe-west1-aiplatform.googleapis.com"
    assert second.url.path == ("/v1/projects/p/locations/europe-west1/publishers/anthropic/"
                               "models/claude-x:rawPredict")
    assert second.headers["authorization"] == "Bearer token-1", "authorised for the request"
    result = outcome(message)
    assert result.served_region == "europe-west1" and result.degraded


def test_a_vertex_region_endpoint_keeps_the_moved_location() -> None:
    from resilient_llm.transport.shared import relocated

    url = httpx2.URL("https://us-east5-aiplatform.googleapis.com/v1/projects/p/locations/"
                     "us-east5/publishers/anthropic/models/m:rawPredict")
    moved = relocated(url, "global")
    assert moved is not None and moved.host == "aiplatform.googleapis.com"
    assert "/locations/global/" in moved.path
    eu = relocated(url, "eu")
    assert eu is not None and eu.host == "aiplatform.eu.rep.googleapis.com"
    assert relocated(url, "us-east5") is None and relocated(url, None) is None
    custom = relocated(httpx2.URL("http://127.0.0.1:9/v1/projects/p/locations/us-east5/x"),
                       "europe-west4")
    assert custom is not None and custom.host == "127.0.0.1"  # a custom base URL stays
    assert custom.path == "/v1/projects/p/locations/europe-west4/x"
    assert relocated(httpx2.URL("https://bedrock-runtime.us-east-1.amazonaws.com/model/m/invoke"),
                     "eu-west-1") is None


# --- credentials asked for per attempt, as the official clients do ------------------------------


class TokenProvider:
    """An Azure AD token provider that counts its calls and hands out a new token each time."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        return f"aad-{self.calls}"


class AsyncTokenProvider(TokenProvider):
    async def __call__(self) -> str:  # type: ignore[override]
        return super().__call__()


def azure_with(provider: TokenProvider, script: Script, *, is_async: bool = False,
               **kwargs: Any) -> Any:
    cls = openai_dropin.AsyncAzureOpenAI if is_async else openai_dropin.AzureOpenAI
    http = (httpx2.AsyncClient if is_async else httpx2.Client)(
        transport=httpx2.MockTransport(script))
    client = cls(azure_ad_token_provider=provider, api_version="2024-10-21",
                 azure_endpoint="https://eastus.example.test", http_client=http, **kwargs)
    client._resilient_clock, client._resilient_rng = FakeClock(), FakeRandom(0)
    return client


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_the_azure_token_provider_is_asked_once_per_attempt(is_async: bool) -> None:
    provider = AsyncTokenProvider() if is_async else TokenProvider()
    script = Script("AzureOpenAI", throttle("AzureOpenAI"), throttle("AzureOpenAI"))
    client = azure_with(provider, script, is_async=is_async)

    async def acall() -> Any:
        async with client:
            return await create(client, "AzureOpenAI")

    if is_async:
        result = anyio.run(acall)
    else:
        with client:
            result = create(client, "AzureOpenAI")
    assert provider.calls == 3, "one token per attempt, as the official client asks"
    assert [r.headers["authorization"] for r in script.requests] == [
        "Bearer aad-1", "Bearer aad-2", "Bearer aad-3"]
    assert len({r.headers["idempotency-key"] for r in script.requests}) == 1
    assert [a.failure for a in outcome(result).attempts] == ["rate_limited", "rate_limited", None]


def test_an_azure_call_that_succeeds_at_once_asks_for_one_token() -> None:
    provider = TokenProvider()
    script = Script("AzureOpenAI")
    with azure_with(provider, script) as client:
        create(client, "AzureOpenAI")
        create(client, "AzureOpenAI")
    assert provider.calls == 2 and len(script.requests) == 2


def test_a_fallback_deployment_gets_its_own_token() -> None:
    provider = TokenProvider()
    overloaded = httpx2.Response(503, json={"error": {"code": "503", "message": "busy"}})
    script = Script("AzureOpenAI", overloaded)
    policy = Policy(fallbacks={"gpt-4.1": ["gpt-4.1-backup"]})
    with azure_with(provider, script, policy=policy) as client:
        result = create(client, "AzureOpenAI")
    first, second = script.requests
    assert "/deployments/gpt-4.1/" in first.url.path
    assert "/deployments/gpt-4.1-backup/" in second.url.path
    assert (first.headers["authorization"], second.headers["authorization"]) == (
        "Bearer aad-1", "Bearer aad-2")
    assert outcome(result).served_by == "gpt-4.1-backup"


def test_a_vertex_attempt_sent_after_its_token_expired_gets_a_fresh_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("anthropic.lib.vertex._client.refresh_auth",
                        lambda credentials: credentials.refresh(None))
    clock = FakeClock()
    credentials = Credentials(clock, lifetime=1.0)  # expires during the 5 s backoff
    slow = httpx2.Response(429, headers={"retry-after": "5"}, json={"error": {
        "code": 429, "status": "RESOURCE_EXHAUSTED", "message": "Quota exceeded."}})
    script = Script("AnthropicVertex", slow, slow)
    with vertex_with(credentials, script, clock, policy=Policy(deadline=60)) as client:
        create(client, "AnthropicVertex")
    assert credentials.refreshes == 3
    assert [r.headers["authorization"] for r in script.requests] == [
        "Bearer token-1", "Bearer token-2", "Bearer token-3"]


def test_a_vertex_token_still_valid_is_not_refreshed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("anthropic.lib.vertex._client.refresh_auth",
                        lambda credentials: credentials.refresh(None))
    clock = FakeClock()
    credentials = Credentials(clock, lifetime=3600)
    script = Script("AnthropicVertex", throttle("AnthropicVertex"), throttle("AnthropicVertex"))
    with vertex_with(credentials, script, clock) as client:
        create(client, "AnthropicVertex")
    assert credentials.refreshes == 1
    assert {r.headers["authorization"] for r in script.requests} == {"Bearer token-1"}
