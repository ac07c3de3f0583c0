"""An agent's turn, traced: the official Python MCP SDK (2.x) with OpenTelemetry on (otel_setup.py)
calls Conductorio over Streamable HTTP inside one span of its own, `agent turn`, so every request
carries that trace's context in `params._meta` (the SDK injects it). Used by
orchestrator/tests/it/traces.rs.

Calls, in order: process_data before validate_data (refused), validate_data with an unknown schema
(the tool fails: isError), validate_data, echo (an MCP server's tool), then create_backup and
restore_backup (which waits for the approval the test gives); then asks for the resources and the
prompts, reads a resource and gets a prompt that nobody offers, and asks for a completion (each a
request of its own kind, with a SERVER span of its own).

Prints one JSON line: the turn's trace id and span id, each call's isError, and how each of the
other requests ended ("ok", or the JSON-RPC error code).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import anyio
from mcp import ClientSession, MCPError, types
from mcp.client.streamable_http import streamable_http_client
from opentelemetry import trace

import otel_setup

CUSTOMERS = [
    {"id": "1", "name": "Ada Lovelace", "email": "ada@example.com"},
]


async def turn(session: ClientSession) -> dict[str, Any]:
    out: dict[str, Any] = {}
    await session.initialize()
    calls = [
        ("denied", "process_data", {"records": CUSTOMERS, "dedupe_by": "email"}),
        ("failed", "validate_data", {"records": CUSTOMERS, "schema": "no-such-schema"}),
        ("validated", "validate_data", {"records": CUSTOMERS, "schema": "customer"}),
        ("echoed", "echo", {"text": "traced"}),
        ("processed", "process_data", {"records": CUSTOMERS, "dedupe_by": "email"}),
        ("backup", "create_backup", {"name": "traced", "data": CUSTOMERS, "overwrite": True}),
        ("restored", "restore_backup", {"name": "traced"}),
    ]
    for key, tool, arguments in calls:
        result = await session.call_tool(tool, arguments)
        assert isinstance(result, types.CallToolResult), f"{tool}: {result}"
        out[key] = bool(result.is_error)
    requests = [
        ("resources/list", lambda: session.list_resources()),
        ("prompts/list", lambda: session.list_prompts()),
        ("resources/read", lambda: session.read_resource("conductorio-test://nothing")),
        ("prompts/get", lambda: session.get_prompt("no_such_prompt")),
        (
            "completion/complete",
            lambda: session.complete(
                types.PromptReference(type="ref/prompt", name="no_such_prompt"),
                {"name": "topic", "value": "tr"},
            ),
        ),
    ]
    for method, request in requests:
        try:
            await request()
            out[method] = "ok"
        except MCPError as error:
            out[method] = error.error.code
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--otlp", required=True, help="the OTLP/gRPC endpoint spans go to")
    args = parser.parse_args()
    provider = otel_setup.setup("python-agent", args.otlp)
    tracer = trace.get_tracer("traced-client")
    with tracer.start_as_current_span("agent turn") as span:
        context = span.get_span_context()
        async with streamable_http_client(args.url) as (read, write):
            async with ClientSession(
                read, write, client_info=types.Implementation(name="traced-agent", version="1.0")
            ) as session:
                summary = await turn(session)
    provider.force_flush()
    summary["trace_id"] = format(context.trace_id, "032x")
    summary["span_id"] = format(context.span_id, "016x")
    print(json.dumps(summary))
    sys.stdout.flush()


if __name__ == "__main__":
    anyio.run(main)
