"""Every private attribute of another library that resilient-llm relies on, in one list.

The drop-ins wrap the official SDKs through their public seams wherever one exists
(``http_client=`` with a custom transport). Where none does, the dependency is listed here,
with the reason, and ``tests/test_seams.py`` checks each one against the installed versions:
when a dependency moves, that test fails by name instead of a call failing in production.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SEAMS", "Seam"]


@dataclass(frozen=True, slots=True)
class Seam:
    """One private dependency: ``name`` on ``owner`` (a dotted path), used in ``used_in``."""

    owner: str
    name: str
    used_in: str
    why: str


SEAMS: tuple[Seam, ...] = (
    Seam("httpx2._multipart.MultipartStream", "fields", "transport.shared.is_replayable",
         "a multipart upload is retried when every file renders again (text, bytes, or a "
         "seekable file httpx2 seeks back to 0), as the official SDKs retry uploads"),
    Seam("httpx2._multipart.FileField", "file", "transport.shared.is_replayable",
         "the file of one multipart field: text, bytes, or a file object"),
    Seam("httpx2.Client", "_mounts", "dropin.base.wrap_http_client",
         "the SDK's default client keeps its limits, proxies and socket options: its transport "
         "is wrapped as the catch-all mount instead of being replaced"),
    Seam("httpx2.Client", "_transport", "dropin.base.wrap_http_client",
         "the default transport that becomes the wrapped catch-all mount"),
    Seam("httpx2._utils", "URLPattern", "dropin.base.wrap_http_client",
         "the key type of ``_mounts`` (the catch-all ``all://`` pattern)"),
    Seam("httpx.Client", "_transport", "transport.legacy.wrap_legacy_client",
         "a legacy httpx client (openai accepts one as http_client): its default transport "
         "gets the resilient transport under it, through an httpx2 adapter"),
    Seam("httpx.Client", "_mounts", "transport.legacy.wrap_legacy_client",
         "as ``_transport``, for the legacy client's proxy and custom mounts"),
    Seam("openai.OpenAI", "_client", "dropin.base",
         "the httpx2 client whose transport is wrapped"),
    Seam("anthropic.Anthropic", "_client", "dropin.base",
         "the httpx2 client whose transport is wrapped"),
    Seam("openai.OpenAI", "_make_status_error_from_response", "dropin.base",
         "the SDK's own status error for a DeadlineExceeded cause (``_make_status_error`` is "
         "final)"),
    Seam("anthropic.Anthropic", "_make_status_error_from_response", "dropin.base",
         "as for openai"),
    Seam("anthropic.Anthropic", "_token_cache", "dropin.base",
         "the credentials cache the SDK invalidates and retries once on a 401"),
    Seam("openai.OpenAI", "_prepare_request", "dropin.base.SyncDropIn",
         "the SDK's per-attempt signing step (a provider runtime's AWS SigV4), run again for "
         "each attempt the transport sends: a signature is never re-sent as it was"),
    Seam("anthropic.AnthropicBedrock", "_prepare_request", "dropin.base.SyncDropIn",
         "as for openai: Bedrock, AWS and Mantle sign with SigV4 there, Vertex and Google "
         "Cloud refresh their token"),
    Seam("openai.AzureOpenAI", "_prepare_options", "dropin.signing.Resign",
         "the SDK's per-attempt credential step (Azure's ``azure_ad_token_provider``), run "
         "again for each attempt the transport sends: a token provider is asked per attempt"),
    Seam("anthropic.AnthropicVertex", "_prepare_options", "dropin.signing.Resign",
         "as for openai (the anthropic clouds add no credential there today)"),
    Seam("openai.Stream", "_iterator", "dropin.base.close_when_dropped",
         "a stream dropped mid-way closes its connection at once instead of at the next GC"),
    Seam("openai.lib.streaming.chat.ChatCompletionStream", "_raw_stream",
         "events.outcome.lookup", "outcome() of a stream helper is its raw stream's"),
    Seam("anthropic.lib.streaming.MessageStream", "_raw_stream", "events.outcome.lookup",
         "as for openai"),
)
