"""Spans are recorded only where they can go somewhere; trace ids are made and passed on always."""

from __future__ import annotations

from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from comfyline.runtime import tracing
from comfyline.runtime.settings import OtelSettings
from comfyline.runtime.tracing import sampler, span

SAMPLED_PARENT = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}


def tracer(endpoint: str | None) -> trace.Tracer:
    settings = OtelSettings(endpoint=endpoint)
    provider = TracerProvider(sampler=sampler(settings, exporting=bool(endpoint)))
    return provider.get_tracer("test")


def test_without_an_exporter_a_new_trace_is_not_recorded_but_has_ids_to_pass_on() -> None:
    with tracer(None).start_as_current_span("submit") as span:
        assert not span.is_recording()
        context = span.get_span_context()
        assert context.is_valid and not context.trace_flags.sampled
        headers: dict[str, str] = {}
        propagate.inject(headers)
    trace_id = format(context.trace_id, "032x")
    _version, sent_id, _, flags = headers["traceparent"].split("-")
    assert sent_id == trace_id and not int(flags, 16) & 1  # passed on, marked not sampled


def test_a_sampled_parent_is_followed_without_an_exporter() -> None:
    parent = propagate.extract(SAMPLED_PARENT)
    with tracer(None).start_as_current_span("run", context=parent) as span:
        assert span.is_recording()
        assert (
            format(span.get_span_context().trace_id, "032x") == SAMPLED_PARENT["traceparent"][3:35]
        )


def test_with_an_exporter_a_new_trace_is_recorded() -> None:
    with tracer("http://127.0.0.1:4318").start_as_current_span("submit") as span:
        assert span.is_recording() and span.get_span_context().trace_flags.sampled


def test_a_process_that_exports_nothing_makes_no_span_and_passes_the_callers_on(
    monkeypatch: Any,
) -> None:
    """:func:`span` where nothing is exported: the caller's trace goes on as it came (the ids a
    log line shows, the ``traceparent`` a publish sends); where spans are exported, a span of
    its own, child of the caller's."""
    provider = TracerProvider(sampler=sampler(OtelSettings(), exporting=True))
    finished = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(finished))
    test_tracer = provider.get_tracer("test")
    parent = propagate.extract(SAMPLED_PARENT)
    for exporting in (False, True):
        monkeypatch.setattr(tracing, "_exporting", exporting)
        token = context.attach(parent)
        try:
            with span(test_tracer, "publish jobs", attributes={"a": "b"}) as current:
                current.set_attribute("outcome", "ack")
                headers: dict[str, str] = {}
                propagate.inject(headers)
        finally:
            context.detach(token)
        if not exporting:
            assert headers == SAMPLED_PARENT and not finished.get_finished_spans()
        else:
            [made] = finished.get_finished_spans()
            assert made.name == "publish jobs" and made.attributes == {"a": "b", "outcome": "ack"}
            assert made.parent is not None and made.parent.span_id == 0xB7AD6B7169203331
            assert headers["traceparent"].split("-")[1] == SAMPLED_PARENT["traceparent"][3:35]
            assert headers["traceparent"].split("-")[2] == format(made.context.span_id, "016x")
