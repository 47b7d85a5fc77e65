"""Which tracer and meter provider telemetry writes to, through the public OpenTelemetry API.

The application configures OpenTelemetry (``trace.set_tracer_provider`` /
``metrics.set_meter_provider``, or the ``OTEL_PYTHON_*_PROVIDER`` variables); a library only
asks the API. Until an SDK is configured the API hands out its own placeholders (a proxy that
starts delegating once a provider is set, or a no-op one): telemetry then skips span and
metric work for the call, since every span and point would go nowhere. :func:`configure`
overrides the globals (tests, applications with several providers).
"""

from __future__ import annotations

from opentelemetry import metrics, trace

from .conventions import INSTRUMENTATION_NAME, Conventions, library_version
from .metrics import Instruments

__all__ = [
    "configure",
    "instruments_for",
    "is_api_placeholder",
    "meter_provider",
    "tracer_for",
    "tracer_provider",
]

_explicit_tracer_provider: trace.TracerProvider | None = None
_explicit_meter_provider: metrics.MeterProvider | None = None
_tracers: dict[tuple[int, Conventions], trace.Tracer] = {}
_instruments: dict[tuple[int, Conventions], Instruments] = {}

#: The OpenTelemetry API's own packages: providers defined there are placeholders, not an SDK.
_API_PACKAGES = ("opentelemetry.trace", "opentelemetry.metrics")


def is_api_placeholder(provider: object) -> bool:
    """Is ``provider`` one of the API's stand-ins (proxy or no-op) rather than an SDK's?

    The trace API exports its proxy and no-op classes; the metrics API exports only the no-op
    one (its proxy class is private). Rather than name a private class, this asks where the
    provider's class is defined: the API package itself defines only stand-ins, an SDK (the
    official one or a vendor's) defines its providers elsewhere. ``tests/test_telemetry_sinks``
    checks both APIs' current stand-ins against this rule, so a layout change fails loudly.
    """
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider,
                             metrics.NoOpMeterProvider)):
        return True
    return type(provider).__module__.startswith(_API_PACKAGES)


def tracer_provider() -> trace.TracerProvider | None:
    """The tracer provider to use, or ``None`` when spans would go nowhere (no SDK)."""
    if _explicit_tracer_provider is not None:
        return _explicit_tracer_provider
    provider = trace.get_tracer_provider()
    return None if is_api_placeholder(provider) else provider


def meter_provider() -> metrics.MeterProvider | None:
    """The meter provider to use, or ``None`` when metric points would go nowhere."""
    if _explicit_meter_provider is not None:
        return _explicit_meter_provider
    provider = metrics.get_meter_provider()
    return None if is_api_placeholder(provider) else provider


def configure(*, tracer_provider: trace.TracerProvider | None = None,
              meter_provider: metrics.MeterProvider | None = None) -> None:
    """Use these providers instead of the global ones (``None``: back to the globals).

    For tests and for applications that keep several providers; most applications set the
    global providers and never call this.
    """
    global _explicit_tracer_provider, _explicit_meter_provider
    _explicit_tracer_provider = tracer_provider
    _explicit_meter_provider = meter_provider
    _tracers.clear()
    _instruments.clear()


def tracer_for(provider: trace.TracerProvider, conv: Conventions) -> trace.Tracer:
    """resilient-llm's tracer of ``provider`` under the conventions ``conv`` (created once)."""
    key = (id(provider), conv)
    tracer = _tracers.get(key)
    if tracer is None:
        tracer = _tracers[key] = provider.get_tracer(
            INSTRUMENTATION_NAME, library_version(), schema_url=conv.schema_url)
    return tracer


def instruments_for(provider: metrics.MeterProvider, conv: Conventions) -> Instruments:
    """Every instrument of ``provider`` under the conventions ``conv`` (created once)."""
    key = (id(provider), conv)
    found = _instruments.get(key)
    if found is None:
        meter = provider.get_meter(INSTRUMENTATION_NAME, library_version(),
                                   schema_url=conv.schema_url)
        found = _instruments[key] = Instruments(meter, conv)
    return found
