"""OpenTelemetry: one trace per job across every hop.

Every publish injects W3C ``traceparent`` into the NATS headers; every consume continues the trace
from them. With no OTLP endpoint configured, a trace this service starts is not recorded: its ids
are still made and passed on (logs, events, ``traceparent``, marked not sampled), but no span's
attributes, events and timings are kept for an exporter that is not there. Recording them cost
about 0.4 ms of CPU per job in each of the gateway, orchestrator and worker, 1.2 ms of a
sequential job's latency on 2 cores. A trace that arrives sampled (a caller's ``traceparent``,
or a service before this one that exports) is still recorded here, so one service without an
endpoint does not cut a trace the others export.

A process that exports nothing makes no span of its own on the hot paths either (a publish, a
consumed message, an S3 call, a run: :func:`span`): unrecorded, a span is only its cost, about
30 us each on every message. The trace's context flows on regardless (the current context
carries the caller's, and a publish passes that on), so the ids in the logs and the trace a
later service exports are the same; its spans then hang from the last span that was exported
rather than from one that never was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from contextlib import AbstractContextManager

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler, TraceIdRatioBased

from .settings import OtelSettings

_installed: TracerProvider | None = None
_exporting = False
_ids = RandomIdGenerator()


def sampler(settings: OtelSettings, exporting: bool) -> Sampler:
    """Traces started here sampled at ``sample_ratio`` when spans go somewhere, else none; a
    parent's decision is followed either way (see the module's docstring)."""
    return ParentBased(TraceIdRatioBased(settings.sample_ratio) if exporting else ALWAYS_OFF)


def setup_tracing(
    service: str, settings: OtelSettings, extra_processor: SpanProcessor | None = None
) -> TracerProvider:
    """Install the process-wide tracer provider once (later calls return the first)."""
    global _installed, _exporting
    if _installed is not None:
        return _installed
    _exporting = bool(settings.endpoint) or extra_processor is not None
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"comfyline-{service}"}),
        sampler=sampler(settings, exporting=_exporting),
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


def span(
    tracer: trace.Tracer,
    name: str,
    *,
    kind: trace.SpanKind = trace.SpanKind.INTERNAL,
    attributes: Mapping[str, str | int] | None = None,
) -> AbstractContextManager[trace.Span]:
    """``tracer.start_as_current_span`` in a process that exports traces; elsewhere the current
    span as it is (see the module)."""
    if _exporting:
        return tracer.start_as_current_span(name, kind=kind, attributes=attributes)
    return contextlib.nullcontext(trace.get_current_span())


def exporting() -> bool:
    """Whether this process's spans go to an exporter (see :func:`setup_tracing`)."""
    return _exporting


def request_context(headers: Mapping[str, str]) -> context.Context:
    """The trace context a request runs in, in a process that exports no spans: the caller's
    (its ``traceparent``) as it came, else a new trace, not recorded, whose ids are passed on
    (what an unrecorded span of the request's own would give, without making one)."""
    found = propagate.extract(headers)
    if trace.get_current_span(found).get_span_context().is_valid:
        return found
    made = trace.SpanContext(
        trace_id=_ids.generate_trace_id(),
        span_id=_ids.generate_span_id(),
        is_remote=False,
        trace_flags=trace.TraceFlags(trace.TraceFlags.DEFAULT),
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(made), found)


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
