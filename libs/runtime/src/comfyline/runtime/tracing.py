"""OpenTelemetry: one trace per job across every hop.

Every publish injects W3C ``traceparent`` into the NATS headers; every consume continues the trace
from them. With no OTLP endpoint configured, spans are still made (so ids appear in logs) but not
exported.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from .settings import OtelSettings

_installed: TracerProvider | None = None


def setup_tracing(
    service: str, settings: OtelSettings, extra_processor: SpanProcessor | None = None
) -> TracerProvider:
    """Install the process-wide tracer provider once (later calls return the first)."""
    global _installed
    if _installed is not None:
        return _installed
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"comfyline-{service}"}),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
    )
    if settings.endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=settings.endpoint.rstrip("/") + "/v1/traces")
        provider.add_span_processor(BatchSpanProcessor(exporter))
    if extra_processor is not None:
        provider.add_span_processor(extra_processor)
    trace.set_tracer_provider(provider)
    _installed = provider
    return provider


def shutdown_tracing() -> None:
    """Flush and stop the exporter (at the end of ``main``)."""
    if _installed is not None:
        _installed.shutdown()


def tracer(name: str) -> trace.Tracer:
    """A tracer for one module."""
    return trace.get_tracer(name)


def inject_headers(headers: dict[str, str]) -> dict[str, str]:
    """Add ``traceparent`` (and ``tracestate``) for the current span to ``headers``."""
    propagate.inject(headers)
    return headers


def extract_context(headers: Mapping[str, str] | None) -> context.Context:
    """The trace context carried by a message's headers (empty when there is none)."""
    return propagate.extract(dict(headers or {}))


def current_trace_id() -> str | None:
    """The current trace id as 32 hex digits, for logs."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None
