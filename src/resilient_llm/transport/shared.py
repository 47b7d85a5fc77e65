"""What the sync and async drivers share: the request edits of an attempt, the plan of a
request, header reads, and the error for foreign transport exceptions. No I/O here."""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import re
from collections.abc import Callable
from typing import Any, ClassVar, Generic, NoReturn, TypeVar, cast
from urllib.parse import quote, unquote

import httpx2

from .._clock import SYSTEM_CLOCK, SYSTEM_RANDOM, Clock, RandomSource
from .._policy import Policy
from ..engine.call import Call, Send, current_call, end_call, start_call
from ..engine.classify import (
    Failure,
    classify_body_read_error,
    classify_exception,
    first_token_timeout,
)
from ..engine.plan import Action, Failed, Plan, Raise, Return
from ..engine.pressure import TargetKey, TargetPressure, estimate_tokens
from ..engine.registry import registry
from ..engine.routing import Target
from ..providers import Wire, wire_for
from ..providers._eventstream import is_aws_event_stream
from ..providers._ratelimits import parse_rate_limits

__all__ = [
    "SIGNER",
    "DriverBase",
    "ForeignTransportError",
    "LimitTimeout",
    "Outgoing",
    "Result",
    "StreamFailedEarly",
    "WrappingTransport",
    "as_failed",
    "body_read_failed",
    "content_type",
    "ended",
    "first_token_fired",
    "first_token_timeouts",
    "header",
    "is_event_stream",
    "is_json",
    "streaming",
]

_IDEMPOTENCY_HEADER = "Idempotency-Key"

#: ``request.extensions`` key of the SDK's per-attempt request step (``_prepare_request``: AWS
#: SigV4, Google and Azure tokens), put there by the drop-in clients as a callable
#: ``(request, region)``: every attempt after the first one, and every request rewritten for
#: another target, is signed again, for the host, path, body, region and time it is sent with,
#: never sent with the first attempt's signature.
SIGNER = "resilient_llm.signer"


def header(headers: httpx2.Headers, *names: str) -> str | None:
    """The first non-empty value among ``names`` (``headers.get(a) or headers.get(b) ...``); an
    empty value is returned only when no later name has a value."""
    found: str | None = None
    for name in names:
        value = headers.get(name)
        if value:
            return value
        if value is not None:
            found = value
    return found


def content_type(response: httpx2.Response) -> str:
    return header(response.headers, "content-type") or ""


def is_event_stream(content_type: str) -> bool:
    """A stream the drivers guard: server-sent events, or Amazon's binary event stream."""
    return content_type.startswith("text/event-stream") or is_aws_event_stream(content_type)


def is_json(content_type: str) -> bool:
    """A JSON document (``application/json``, ``text/json``, ``application/problem+json``): the
    drivers read it whole, with the size cap. JSON Lines (``application/jsonl``,
    ``application/x-ndjson``: batch results, file downloads) is not one: the SDK reads it line
    by line as it arrives, and it may be far larger."""
    media = content_type.partition(";")[0].strip().lower()
    return media.endswith(("/json", "+json"))


def body_of(request: httpx2.Request) -> bytes:
    """The bytes of a request with a replayable body."""
    try:
        return request.content
    except httpx2.RequestNotRead:  # a redirect's copy of the request: same bytes, not read yet
        return b"".join(cast(httpx2.ByteStream, request.stream))


#: The path suffix by which Bedrock asks for a stream (its body has no ``stream`` field).
_BEDROCK_STREAM = b"/invoke-with-response-stream"


def streaming(request: httpx2.Request) -> bool:
    """Does this request ask for a stream (``"stream": true``, or Bedrock's stream path)?"""
    if not isinstance(request.stream, httpx2.ByteStream):
        return False
    if request.url.raw_path.split(b"?", 1)[0].endswith(_BEDROCK_STREAM):
        return True
    body = body_of(request)
    return b'"stream":true' in body or b'"stream": true' in body


def is_replayable(request: httpx2.Request) -> bool:
    """Can the body be sent again as it was? Bytes can, and a multipart upload whose files are
    bytes or seekable (httpx2 renders it again from its fields, seeking each file back to 0,
    as the official SDKs' retries do); a one-shot iterator cannot."""
    stream = request.stream
    return isinstance(stream, httpx2.ByteStream) or _replayable_multipart(stream)


_DATA_FIELD = object()


def _replayable_multipart(stream: object) -> bool:
    """httpx2's ``MultipartStream`` with every file text, bytes or a seekable file object (its
    ``fields`` and their ``file``: seams listed in ``dropin.seams``)."""
    if type(stream).__name__ != "MultipartStream":
        return False
    fields = getattr(stream, "fields", None)
    if not isinstance(fields, list):
        return False
    for field in fields:
        file = getattr(field, "file", _DATA_FIELD)
        if file is _DATA_FIELD or isinstance(file, (str, bytes)):
            continue
        if getattr(file, "closed", False) or not _seekable(file):
            return False  # (a file closed since the first send cannot be read again)
    return True


def _seekable(file: object) -> bool:
    seekable = getattr(file, "seekable", None)
    try:
        return callable(seekable) and bool(seekable())
    except (OSError, ValueError):
        return False


def target_of(request: httpx2.Request) -> str | None:
    """The model a raw request asks for (only used outside a drop-in client)."""
    if request.method != "POST" or not is_replayable(request):
        return None
    try:
        body = json.loads(request.content)
    except (ValueError, UnicodeDecodeError):
        return None
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) else None


def prepare_attempt(request: httpx2.Request, call: Call, send: Send, provider: str,
                    *, other_body: bool = False) -> None:
    """Per-attempt request edits: clipped timeouts, the attempt number, the idempotency key.

    One key per call, the same on every retry of the caller's request; ``other_body``: this
    attempt sends another body or path (a fallback's model, a stream's continuation), which
    gets a key of its own derived from the call's and them: a key is never sent with two
    payloads (the IETF idempotency-key draft answers that with a 422, and a server that
    stores results would hand back the first request's)."""
    request.extensions["timeout"] = send.timeouts
    record = call.record
    if record.server_address is None:
        url = request.url
        record.provider = provider
        record.server_address = url.host
        record.server_port = url.port or (443 if url.scheme == "https" else 80)
        record.path = url.path
    # The SDK numbers attempts in this header; its loop is off, so number ours, but never
    # overwrite a value the caller set themselves.
    # (An attempt signed again is a fresh copy of the first one, so it still says 0.)
    if send.attempt > 1:
        count = request.headers.get("x-stainless-retry-count")
        if count is not None and count.isdigit() and int(count) < send.attempt - 1:
            request.headers["x-stainless-retry-count"] = str(send.attempt - 1)
    key = call.record.idempotency_key  # chosen when the call started (``DriverBase.start``)
    if key is not None and request.method != "GET":
        if other_body:  # (the path too: Bedrock and Vertex name the model there, not the body)
            digest = hashlib.sha256(request.url.raw_path + b"\n" + request.content).hexdigest()
            key = f"{key}-{digest[:16]}"
        request.headers[_IDEMPOTENCY_HEADER] = key


def first_token_timeouts(send: Send) -> dict[str, float | None]:
    """The phase timeouts of a streamed attempt until its response headers arrive.

    The first-token limit runs from the send and covers connecting, the headers and the first
    event together, so no phase may wait longer than it. The body's reads keep the attempt's
    own timeouts (:attr:`Send.timeouts`): once the headers are in, the first-token and idle
    limits bound them (sync: the watchdog; async: cancel scopes).
    """
    limit = send.first_token_timeout
    return {phase: limit if value is None or value > limit else value
            for phase, value in send.timeouts.items()}


_TIMEOUT_PHASES = (
    (httpx2.ConnectTimeout, "connect"), (httpx2.ReadTimeout, "read"),
    (httpx2.WriteTimeout, "write"), (httpx2.PoolTimeout, "pool"),
)


def first_token_fired(exc: BaseException, send: Send) -> bool:
    """Did ``exc``, raised while a streamed attempt waited for its headers, come from the
    first-token limit (rather than from a shorter timeout of the caller's own)?"""
    for kind, phase in _TIMEOUT_PHASES:
        if isinstance(exc, kind):
            own = send.timeouts.get(phase)
            return own is None or own > send.first_token_timeout
    return False


def ended(action: Action) -> httpx2.Response | None:
    """Where a driver's loop stops: the response a ``Return`` hands back (``None`` for every
    other action, which the driver performs); a ``Raise`` raises its error here."""
    if isinstance(action, Return):
        return cast(httpx2.Response, action.value)
    if isinstance(action, Raise):
        try:
            raise action.error
        finally:  # the error's traceback holds this frame: no cycle through its locals
            del action
    return None


def status_error(response: httpx2.Response, failure: Failure) -> httpx2.HTTPStatusError:
    return httpx2.HTTPStatusError(
        f"{failure.describe()}", request=response.request, response=response
    )


def as_failed(failure: Failure, last: httpx2.Response | BaseException) -> Failed:
    """A failed attempt as the plan reads it: the error response or exception, and the same as
    an exception (the cause of whatever error ends the call)."""
    return Failed(failure, last, last if isinstance(last, BaseException)
                  else status_error(last, failure))


class ForeignTransportError(httpx2.TransportError):
    """A non-httpx2 exception from the transport that the official SDK would retry.

    The engine classifies transport failures by their httpx2 type; an SDK may also retry
    other exceptions raised while sending (openai 3.54: ``ssl.SSLError`` and
    ``anyio.EndOfStream``; anthropic: anything that is not an ``AnthropicError``). Wrapping them
    lets the one retry layer retry them; ``original`` is what the caller finally sees as the
    ``__cause__`` of the SDK's ``APIConnectionError``, exactly as with the official client.
    """

    def __init__(self, original: Exception, request: httpx2.Request) -> None:
        super().__init__(f"{type(original).__name__}: {original}", request=request)
        self.original = original


class LimitTimeout(httpx2.ReadTimeout):
    """A read the transport ended itself because one of the policy's limits passed (not a
    server timeout, and not a reset, although the watchdog closes the socket to end it).

    The message names the limit and its setting; the drop-in clients append it to the SDK's
    ``APITimeoutError``, whose own message ("Request timed out.") cannot say which limit.
    """


class StreamFailedEarly(httpx2.RemoteProtocolError):
    """A stream that failed before any output for a reason its bytes showed (a malformed
    event, a body that ended early); the message says which, and the drop-in clients append
    it to the SDK's ``APIConnectionError`` ("Connection error.")."""


#: What one attempt's exchange ends with: the response to return, or the failure and the
#: error response or exception that caused it.
Result = httpx2.Response | tuple[Failure, httpx2.Response | BaseException]

InnerT = TypeVar("InnerT")


class WrappingTransport(Generic[InnerT]):
    """The face both drivers share: the transport they wrap (``inner``; by default a new one of
    the driver's ``_default_inner`` class) and their configuration (:class:`DriverBase`)."""

    _default_inner: ClassVar[Callable[[], Any]]

    def __init__(
        self,
        inner: InnerT | None = None,
        *,
        policy: Policy | None = None,
        provider: str = "openai",
        clock: Clock = SYSTEM_CLOCK,
        rng: RandomSource = SYSTEM_RANDOM,
        retry_exceptions: Callable[[Exception], bool] | None = None,
        calls_only: bool = False,
    ) -> None:
        self._inner: InnerT = inner if inner is not None else type(self)._default_inner()
        self._base = DriverBase(policy=policy, provider=provider, clock=clock, rng=rng,
                                retry_exceptions=retry_exceptions)
        #: Times this transport was closed: a call sends nothing once it was closed after
        #: the call began (a transport reused by a new client after a close still serves it).
        self._closings = 0
        #: Only requests of a drop-in client's calls are resilient; any other request through
        #: the same ``httpx2`` client (the application's own, an official SDK client sharing
        #: it) is sent as it is, once.
        self._calls_only = calls_only
        self._ready()

    def _ready(self) -> None:
        """A driver's own state for the wrapped pool, made once it is configured (none here)."""

    def _passes_through(self) -> bool:
        """Is the request at hand none of a drop-in call's (with ``calls_only``)?"""
        return self._calls_only and current_call() is None

    def _ensure_open(self, outgoing: Outgoing) -> None:
        """Before each attempt: a retry, a fallback or a stream's continuation of a call whose
        client was closed meanwhile is not sent (httpx2 checks a call's first request only;
        the closed pool would take the connection, and nobody would ever close it)."""
        if outgoing.opened != self._closings:
            raise RuntimeError("Cannot send a request, as the client has been closed.")

    def _start(self, request: httpx2.Request) -> tuple[Plan, Outgoing]:
        plan, outgoing = self._base.start(request)
        outgoing.opened = self._closings
        return plan, outgoing

    @property
    def inner(self) -> InnerT:
        """The wrapped transport."""
        return self._inner


class DriverBase:
    """Configuration shared by both drivers."""

    def __init__(
        self,
        *,
        policy: Policy | None,
        provider: str,
        clock: Clock,
        rng: RandomSource,
        retry_exceptions: Callable[[Exception], bool] | None,
    ) -> None:
        self._policy = policy
        self._wire: Wire = wire_for(provider)
        self._clock = clock
        self._rng = rng
        self._retry_exceptions = retry_exceptions
        self._states: dict[tuple[Any, ...], tuple[int, TargetPressure]] = {}

    def reraise(self, exc: Exception, request: httpx2.Request) -> NoReturn:
        """Re-raise ``exc``, raised by the wrapped transport, as a :class:`ForeignTransportError`
        (a connection failure) when it is not httpx2's and ``retry_exceptions`` accepts it (the
        official SDK would retry it); unchanged otherwise."""
        rule = self._retry_exceptions
        try:
            if rule is None or isinstance(exc, httpx2.TransportError) or not rule(exc):
                raise exc
            raise ForeignTransportError(exc, request) from exc
        finally:  # the error's traceback holds this frame: no cycle through its locals
            del exc

    @property
    def wire(self) -> Wire:
        """The provider's wire format (stream events, error bodies)."""
        return self._wire

    @staticmethod
    def exchange_failed(call: Call, send: Send, exc: Exception, request: httpx2.Request,
                        status: int | None, *, first_token: bool = False
                        ) -> tuple[Failure, Exception]:
        """An exception during an attempt (``status``: the response's, if one arrived): a
        transport failure becomes (failure, the error to report); anything else propagates
        unchanged and is never retried. The attempt is reported finished either way.
        ``first_token``: a streamed attempt was waiting for its headers under the first-token
        limit, so a timeout that limit caused is a ``first_token_timeout``."""
        failure = (first_token_timeout() if first_token and first_token_fired(exc, send)
                   else classify_exception(exc))
        if failure is None:
            call.attempt_finished(None, status, send)
            raise exc
        attach_request(exc, request)
        call.attempt_finished(failure, status, send)
        return failure, exc

    @property
    def policy(self) -> Policy:
        """The policy for requests made outside a drop-in client call."""
        if self._policy is None:
            self._policy = Policy.from_env()
        return self._policy

    def _call_for(self, request: httpx2.Request) -> Call:
        call = current_call()
        if call is not None:
            return call
        policy = self.policy
        call, token = start_call(
            policy, target=target_of(request), clock=self._clock, rng=self._rng
        )
        end_call(token)
        return call

    # pressure (shared by both drivers; no I/O)

    def pressure_for(self, request: httpx2.Request, call: Call,
                     model: str | None = None) -> TargetPressure:
        url = request.url
        headers = request.headers
        credential = header(headers, "authorization", "x-api-key")
        model = model or call.target
        redis_url = call.policy.redis_url
        # Hot path: this transport's recent targets, while the registry has not been cleared.
        memo = (url.scheme, url.host, url.port, credential, model, redis_url)
        hit = self._states.get(memo)
        if hit is not None and hit[0] == registry.generation:
            return hit[1]
        endpoint = f"{url.scheme}://{url.host}:{url.port or ''}"
        digest = TargetKey.of(endpoint, credential, None).credential
        shared = None
        if redis_url is not None:  # the fleet (and redis) load only when the setting is on
            from ..fleet import fleet_pressure

            shared = fleet_pressure
        state = registry.get(TargetKey(endpoint, digest, model), call.clock.now(),
                             redis_url=redis_url, shared=shared)
        if len(self._states) > 256:
            self._states.clear()
        self._states[memo] = (registry.generation, state)
        return state

    def observe(self, plan: Plan, state: TargetPressure, response: httpx2.Response) -> None:
        """Hand the plan the rate-limit headers of ``response`` when it wants them."""
        if plan.wants_limits(state, response.status_code):
            requests, tokens = parse_rate_limits(self._wire.name, response.headers.raw)
            plan.observe(state, requests, tokens)

    def start(self, request: httpx2.Request) -> tuple[Plan, Outgoing]:
        """The plan of ``request``, and the requests its attempts send."""
        call = self._call_for(request)
        record = call.record
        if record.idempotency_key is None and request.method != "GET":
            # The caller's own key, or one for the call: known from the start, so every log
            # line of the call carries the same call id (a hash of it), those before its first
            # attempt too; every attempt sends it (``prepare_attempt``).
            record.idempotency_key = request.headers.get(_IDEMPOTENCY_HEADER) \
                or f"rllm-{os.urandom(16).hex()}"
        # (partials rather than closures: one object each per request, no cells)
        plan = Plan(call, states=functools.partial(self.pressure_for, request, call),
                    requested=request.extensions.get("timeout"),
                    replayable=is_replayable(request),
                    cost=functools.partial(_estimated_cost, request))
        return plan, Outgoing(request, call, self._wire.name)


def _estimated_cost(request: httpx2.Request) -> float:
    return estimate_tokens(request.content)


class Outgoing:
    """The request each attempt sends: the caller's, or a copy rewritten for a fallback's model
    or region (built once per target)."""

    __slots__ = ("_bodies", "_started", "call", "edit", "opened", "provider", "request",
                 "requested_model")

    def __init__(self, request: httpx2.Request, call: Call, provider: str,
                 edit: Callable[[Target, dict[str, Any]], dict[str, Any]] | None = None) -> None:
        self.request = request
        #: The transport's count of closes when the call began (see ``_ensure_open``).
        self.opened = 0
        self._started = False  # the request as it came (signed by the SDK) not sent yet
        self.call = call
        self.provider = provider
        self.requested_model = call.target
        #: Rewrites the JSON body for each attempt (stream recovery's continuation requests).
        self.edit = edit
        #: The request rewritten per target (made when a first rewrite is: most calls have none).
        self._bodies: dict[str, httpx2.Request] | None = None

    def prepare(self, target: Target, send: Send) -> httpx2.Request:
        """The request for ``send`` to ``target``, with its per-attempt edits (signed again
        when it must be, see :data:`SIGNER`); reports the attempt as started."""
        outgoing, sign = self._signed(target, send, copy=False)
        sign(outgoing)
        self.call.attempt_started(send)
        return outgoing

    async def aprepare(self, target: Target, send: Send, *, copy: bool = False
                       ) -> httpx2.Request:
        """As :meth:`prepare`, with the async client's signer; ``copy``: on a fresh copy (an
        attempt that runs alongside another)."""
        outgoing, sign = self._signed(target, send, copy=copy)
        await _settled(sign(outgoing))
        self.call.attempt_started(send)
        return outgoing

    def _signed(self, target: Target, send: Send, *, copy: bool
                ) -> tuple[httpx2.Request, Callable[[httpx2.Request], Any]]:
        """The request of this attempt with its edits, and the SDK's signing step to run on it
        for the target's region (after the edits, so that the signature covers them). The first
        attempt of the caller's own request was signed by the SDK already; every other one is
        a request of its own, signed again, so that no attempt's headers change under another."""
        source = self._for(target)
        signer = source.extensions.get(SIGNER)
        first = not self._started and source is self.request
        self._started = True
        outgoing = source
        if copy or (signer is not None and not first):
            outgoing = httpx2.Request(source.method, source.url,
                                      headers=httpx2.Headers(source.headers),
                                      content=body_of(source), extensions=dict(source.extensions))
        prepare_attempt(outgoing, self.call, send, self.provider,
                        other_body=source is not self.request and (
                            source.content != self.request.content
                            or source.url.raw_path != self.request.url.raw_path))
        if signer is None or first:  # signing again would call token providers again
            return outgoing, _unsigned
        region = target.region
        return outgoing, lambda request: signer(request, region)

    def _for(self, target: Target) -> httpx2.Request:
        request, edit = self.request, self.edit
        # The client's own region is served by its own endpoint (its base_url, Azure resource,
        # proxy): the map only sends a target in another region elsewhere.
        policy = self.call.policy
        endpoint = policy.region_endpoints.get(target.region) \
            if target.region and target.region != policy.region else None
        renamed = bool(target.model) and target.model != self.requested_model
        located = relocated(request.url, target.region)
        if not renamed and endpoint is None and edit is None and located is None:
            return request
        cached = self._bodies.get(str(target)) if edit is None and self._bodies else None
        if cached is not None:
            return cached
        content = request.content
        url = request.url
        if renamed or edit is not None:
            body = json.loads(content)
            if renamed and ("model" in body or self.requested_model is None):
                asked, body["model"] = body.get("model"), target.model
                if self.provider == "openai" and "prompt_cache_key" in body:
                    from ..caching.keys import keyed_api, rekeyed_for_model

                    api = keyed_api(url.path)
                    if api is not None:
                        body = rekeyed_for_model(body, asked, policy, api)
            if edit is not None:
                body = edit(target, body)
            content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        if located is not None:  # Vertex names the region in the path (and its host)
            url = located
        if renamed and self.requested_model:  # Bedrock and Vertex name the model in the path
            url = url.copy_with(raw_path=retarget_path(
                url.raw_path, self.requested_model, target.model))
        if endpoint is not None:
            origin = httpx2.URL(endpoint)
            url = url.copy_with(scheme=origin.scheme, host=origin.host, port=origin.port)
        headers = httpx2.Headers(request.headers)
        headers["content-length"] = str(len(content))
        if url.netloc != request.url.netloc:
            headers["host"] = url.netloc.decode("ascii")
        if edit is not None:  # spliced events are read as they arrive: no compression
            headers["accept-encoding"] = "identity"
        rewritten = httpx2.Request(
            request.method, url, headers=headers, content=content,
            extensions=dict(request.extensions),
        )
        if edit is None:
            if self._bodies is None:
                self._bodies = {}
            self._bodies[str(target)] = rewritten
        return rewritten


_LOCATION = re.compile(rb"/locations/([^/?]+)/")


def vertex_host(region: str) -> str:
    """Vertex AI's host for a location, as the official client makes it."""
    if region == "global":
        return "aiplatform.googleapis.com"
    if region in ("us", "eu"):
        return f"aiplatform.{region}.rep.googleapis.com"
    return f"{region}-aiplatform.googleapis.com"


def relocated(url: httpx2.URL, region: str | None) -> httpx2.URL | None:
    """``url`` moved to ``region`` when its path names another location (Vertex:
    ``/projects/{p}/locations/{region}/...``), else ``None``. The host moves too when it is
    that location's Vertex host; any other host (a custom ``base_url``) stays, and a
    ``RESILIENT_LLM_REGION_ENDPOINTS`` entry for the region replaces it afterwards."""
    if region is None or b"/locations/" not in url.raw_path:
        return None
    found = _LOCATION.search(url.raw_path)
    if found is None:
        return None
    own = unquote(found[1].decode("ascii"))
    if own.lower() == region:
        return None
    raw = url.raw_path
    path = raw[: found.start(1)] + quote(region, safe="").encode("ascii") + raw[found.end(1):]
    host = vertex_host(region) if url.host == vertex_host(own) else url.host
    return url.copy_with(raw_path=path, host=host)


def retarget_path(raw_path: bytes, model: str, target: str) -> bytes:
    """``raw_path`` with each path segment that names ``model`` naming ``target`` instead.

    Cloud APIs name the model in the path rather than (or as well as) in the body: Bedrock's
    ``/model/{id}/invoke``, Vertex's ``/models/{id}:rawPredict``, Azure's
    ``/deployments/{name}/chat/completions``. A segment names it when, unquoted, it is the
    model, or the model followed by ``:`` and a method; the query is left alone.
    """
    path, sep, query = raw_path.decode("ascii").partition("?")
    segments = path.split("/")
    for index, segment in enumerate(segments):
        name, colon, method = unquote(segment).partition(":")
        if unquote(segment) == model or (colon and name == model and ":" not in model):
            suffix = f":{method}" if unquote(segment) != model else ""
            segments[index] = quote(target, safe=":;") + suffix
    return ("/".join(segments) + sep + query).encode("ascii")


def _unsigned(request: httpx2.Request) -> None:
    return None


async def _settled(result: Any) -> None:
    if inspect.isawaitable(result):
        await result


def body_read_failed(call: Call, send: Send, exc: Exception, request: httpx2.Request,
                     status: int) -> tuple[Failure, Exception]:
    """Reading a response's body failed after its status arrived. A transport error is the
    attempt's failure (the connection broke mid-response: retryable, whatever the status
    said); anything else propagates unchanged. The attempt is reported finished either way."""
    if not isinstance(exc, httpx2.TransportError):
        call.attempt_finished(None, status, send)
        raise exc
    failure = classify_body_read_error(exc)
    attach_request(exc, request)
    call.attempt_finished(failure, status, send)
    return failure, exc


def attach_request(exc: BaseException, request: httpx2.Request) -> None:
    """Transport errors raised below the client carry no request yet; the SDKs need one."""
    if isinstance(exc, httpx2.RequestError):
        try:
            exc.request  # noqa: B018 - raises RuntimeError when unset
        except RuntimeError:
            exc.request = request


