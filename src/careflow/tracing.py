"""OpenTelemetry traces: off unless ``CAREFLOW_TRACING=otlp``; ids and statuses only.

When on, one ingested event is one trace across processes: the request's span (FastAPI's
instrumentation), then, in whichever worker runs them, a span per job (``job_span``: the
dispatch, each action step) with its SQL (SQLAlchemy's instrumentation), the SMTP send
(``client_span``) or the Twilio call (httpx's instrumentation) beneath it. SQL that no
request or job runs is not traced (``_sampler``): the workers' polling, a batch's shared
reads and commit, the group commit that writes many requests' events at once. The context
crosses processes in the job row: ``jobs.traceparent`` holds the W3C ``traceparent`` of the
span that enqueued the job (``current_traceparent``), written in the job's own INSERT.

The exporter is OTLP over HTTP/protobuf and reads the standard ``OTEL_EXPORTER_OTLP_*``
variables (endpoint, headers, timeout, compression); ``OTEL_SERVICE_NAME`` names the
service (``careflow`` when unset); ``OTEL_TRACES_SAMPLER`` and ``OTEL_BSP_*`` apply too.

What a span may carry is decided here, in one place: careflow's own spans carry ids and
statuses; every span leaves the process through ``_Scrubbed``, which drops URL query
strings, status descriptions and exception messages (a driver's or a library's message can
quote the patient data it was handling). SQL spans carry the statement text with its
placeholders, never the bound values.

Off, nothing of OpenTelemetry is imported, ``current_traceparent`` answers None at once
and ``job_span`` / ``client_span`` do nothing: no cost beyond a check of a global.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from careflow.config import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

SCOPE = "careflow"
DEFAULT_SERVICE_NAME = "careflow"
# Attributes whose value is a URL or a target: kept without their query string.
_URL_ATTRIBUTES = ("http.url", "url.full", "http.target")
# Dropped from every span: the query string, and an exception event's message and trace
# (whose last line repeats the message).
_DROPPED_ATTRIBUTES = frozenset({"url.query", "exception.message", "exception.stacktrace"})

_provider: TracerProvider | None = None
_tracer: Any = None
_engines: weakref.WeakSet[Any] = weakref.WeakSet()  # instrumented, each once


class TracingUnavailable(RuntimeError):
    """``CAREFLOW_TRACING=otlp`` without the packages or with an exporter careflow lacks."""


def enabled() -> bool:
    return _provider is not None


def configure_tracing(settings: Settings, *, exporter: SpanExporter | None = None) -> None:
    """Set up (or leave in place) this process's tracing, as ``settings.tracing`` says.

    ``none`` turns tracing off. ``otlp`` installs a tracer provider exporting in batches
    over OTLP/HTTP, once per process: a second call keeps the first provider. ``exporter``
    replaces the OTLP exporter (tests pass an in-memory one); its spans are exported as
    each ends.
    """
    global _provider, _tracer
    if settings.tracing == "none":
        shut_down()
        return
    if _provider is not None and exporter is None:
        return
    shut_down()
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError as exc:
        raise TracingUnavailable(
            "CAREFLOW_TRACING=otlp needs the tracing packages: pip install 'careflow[tracing]'"
        ) from exc
    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    provider = TracerProvider(resource=resource, sampler=_sampler())
    if exporter is None:
        provider.add_span_processor(BatchSpanProcessor(_scrubbing(_otlp_exporter())))
    else:
        provider.add_span_processor(SimpleSpanProcessor(_scrubbing(exporter)))
    _provider = provider
    _tracer = provider.get_tracer(SCOPE)


def _sampler() -> Any:
    """``OTEL_TRACES_SAMPLER``'s sampler (parent-based, always on, by default), less the SQL
    statements no request or job is running: a worker's polling would otherwise be a trace
    of one span every poll interval."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import sampling

    inner = sampling._get_from_env_or_default()

    class NoOrphanSql(sampling.Sampler):
        def should_sample(
            self,
            parent_context: Any,
            trace_id: int,
            name: str,
            kind: Any = None,
            attributes: Any = None,
            links: Any = None,
            trace_state: Any = None,
        ) -> sampling.SamplingResult:
            orphan = not trace.get_current_span(parent_context).get_span_context().is_valid
            if orphan and kind is trace.SpanKind.CLIENT:
                return sampling.SamplingResult(sampling.Decision.DROP)
            return inner.should_sample(
                parent_context, trace_id, name, kind, attributes, links, trace_state
            )

        def get_description(self) -> str:
            return f"NoOrphanSql{{{inner.get_description()}}}"

    return NoOrphanSql()


def _otlp_exporter() -> SpanExporter:
    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
    )
    if protocol != "http/protobuf":
        raise TracingUnavailable(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: careflow exports traces over "
            "http/protobuf only"
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # Endpoint, headers, timeout and compression come from OTEL_EXPORTER_OTLP_*.
    return OTLPSpanExporter()


def shut_down() -> None:
    """Export what is pending and turn tracing off (engines lose their SQL spans)."""
    global _provider, _tracer
    provider, _provider, _tracer = _provider, None, None
    if provider is None:
        return
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

    EngineTracer.remove_all_event_listeners()
    _engines.clear()
    provider.shutdown()


def flush() -> None:
    """Export the spans ended so far (a process about to stop, a test about to look)."""
    if _provider is not None:
        _provider.force_flush()


def instrument_app(app: Any) -> None:
    """The request span of every HTTP request, the fast ingestion path's included (the
    instrumentation wraps the whole middleware stack)."""
    if _provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    # No spans for each ASGI receive and send: the request's own span is what is wanted.
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=_provider, exclude_spans=["receive", "send"]
    )


def instrument_engine(engine: Any) -> None:
    """A span per SQL statement run on ``engine`` (an AsyncEngine or a sync Engine)."""
    if _provider is None:
        return
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.metrics import NoOpMeterProvider

    sync_engine = getattr(engine, "sync_engine", engine)
    if sync_engine in _engines:
        return
    _engines.add(sync_engine)
    # The statement text as compiled, with its placeholders: the instrumentation never
    # records the bound values. No SQL comments (they would defeat statement caches).
    # careflow's metrics are Prometheus's (kit/metrics.py): the pool gauge goes nowhere.
    usage = (
        NoOpMeterProvider().get_meter(SCOPE).create_up_down_counter("db.client.connections.usage")
    )
    EngineTracer(_tracer, sync_engine, connections_usage=usage)


def instrument_httpx_client(client: Any) -> None:
    """A client span per request ``client`` sends (Twilio's API)."""
    if _provider is None:
        return
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor.instrument_client(client, tracer_provider=_provider)


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, to carry in a job row; None when
    tracing is off or no span is current."""
    if _provider is None:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent")


def annotate(**attributes: str | int | None) -> None:
    """Add ids to the current span (the request's id to the request span)."""
    if _provider is None:
        return
    from opentelemetry import trace

    span = trace.get_current_span()
    for key, value in attributes.items():
        if value is not None:
            span.set_attribute(f"careflow.{key}", value)


def mark_failed(exc: BaseException, **attributes: str | int | None) -> None:
    """Mark the current span failed, by the error's class (never its message)."""
    if _provider is None:
        return
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode

    span = trace.get_current_span()
    span.set_attribute("error.type", type(exc).__name__)
    span.set_status(Status(StatusCode.ERROR))
    annotate(**attributes)


@contextlib.contextmanager
def job_span(
    kind: str,
    *,
    traceparent: str | None,
    attributes: Mapping[str, str | int | None],
    not_failures: tuple[type[BaseException], ...] = (),
) -> Iterator[None]:
    """A job's run, as a child of the span that enqueued it (``traceparent``). An error of
    ``not_failures`` (a deferral) leaves the span's status alone."""
    if _provider is None:
        yield
        return
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    parent = (
        TraceContextTextMapPropagator().extract({"traceparent": traceparent})
        if traceparent
        else None
    )
    with _span(
        f"job {kind}", SpanKind.CONSUMER, attributes, context=parent, not_failures=not_failures
    ):
        yield


@contextlib.contextmanager
def client_span(name: str, attributes: Mapping[str, str | int | None]) -> Iterator[None]:
    """A call careflow makes to another system (an SMTP send) under the current span."""
    if _provider is None:
        yield
        return
    from opentelemetry.trace import SpanKind

    with _span(name, SpanKind.CLIENT, attributes):
        yield


@contextlib.contextmanager
def _span(
    name: str,
    kind: Any,
    attributes: Mapping[str, str | int | None],
    *,
    context: Any = None,
    not_failures: tuple[type[BaseException], ...] = (),
) -> Iterator[None]:
    from opentelemetry.trace import Status, StatusCode

    values = {key: value for key, value in attributes.items() if value is not None}
    with _tracer.start_as_current_span(
        name,
        context=context,
        kind=kind,
        attributes=values,
        # The error's class, never its message: that can quote patient data.
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield
        except not_failures:
            raise
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__name__)
            span.set_status(Status(StatusCode.ERROR))
            raise


def _scrubbing(inner: SpanExporter) -> SpanExporter:
    # The processors call export, shutdown and force_flush: all _Scrubbed has.
    return cast("SpanExporter", _Scrubbed(inner))


class _Scrubbed:
    """An exporter that passes on each span without what may quote patient data: query
    strings, status descriptions, exception messages and stack traces."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([_scrubbed(span) for span in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


def _scrubbed(span: ReadableSpan) -> ReadableSpan:
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import Status

    events = [Event(event.name, _clean(event.attributes), event.timestamp) for event in span.events]
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=_clean(span.attributes),
        events=events,
        links=span.links,
        kind=span.kind,
        status=Status(span.status.status_code),
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def _clean(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        if key in _DROPPED_ATTRIBUTES:
            continue
        if key in _URL_ATTRIBUTES and isinstance(value, str):
            value = value.split("?", 1)[0]
        clean[key] = value
    return clean
