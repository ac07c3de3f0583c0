"""OpenTelemetry for the Python peers of the trace tests: a tracer provider that sends every span at
once (no batching, so a test need not wait) over OTLP/gRPC to the endpoint given, or to
OTEL_EXPORTER_OTLP_ENDPOINT. The official MCP SDK's own spans (its client's `MCP send …` spans and its
server's `tools/call …` spans) then go there too, with the trace context in `params._meta`."""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor


def setup(service: str, endpoint: str | None = None) -> TracerProvider:
    endpoint = endpoint or os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"]
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    trace.set_tracer_provider(provider)
    return provider
