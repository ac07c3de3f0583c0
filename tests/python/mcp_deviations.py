"""Two answers the official Python MCP SDK (2.x) once found wrong, checked from its side
(orchestrator/tests/it/mcp_python.rs): a `tools/call` whose params are not a tool call's must be
answered -32602 (invalid params), never -32601 (method not found), and the session's `DELETE` on close
must be answered 200 or 204 (on 202 the SDK logs "Session termination failed: 202").

Connects to --url, opens a session, lists the tools, sends `tools/call` with arguments that are not an
object (built past the SDK's own validation, as a buggy client would send them), then closes the
session. Prints one JSON line: the tools listed, each refused call's JSON-RPC code and message, the
status of every DELETE the SDK sent, and every warning the SDK logged.
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

import anyio
import httpx2
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError


class Collected(logging.Handler):
    """Keeps every warning (and worse) the SDK logs."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {record.getMessage()}")


def bad_call(arguments: Any) -> types.CallToolRequest:
    """A `tools/call` whose arguments are `arguments`, past the SDK's validation of them."""
    params = types.CallToolRequestParams.model_construct(name="validate_data", arguments=arguments)
    return types.CallToolRequest.model_construct(method="tools/call", params=params)


async def run(url: str) -> dict[str, Any]:
    deletes: list[int] = []

    async def on_response(response: httpx2.Response) -> None:
        if response.request.method == "DELETE":
            deletes.append(response.status_code)

    out: dict[str, Any] = {"refused": []}
    async with create_mcp_http_client() as http:
        http.event_hooks["response"].append(on_response)
        async with streamable_http_client(url, http_client=http) as (read, write):
            info = types.Implementation(name="deviations-probe", version="1.0")
            async with ClientSession(read, write, client_info=info) as session:
                await session.initialize()
                listed = await session.list_tools()
                out["tools"] = len(listed.tools)
                for case, arguments in [("a string", "records"), ("a list", [1, 2])]:
                    try:
                        await session.send_request(bad_call(arguments), types.CallToolResult)
                        out["refused"].append({"case": case, "code": None})
                    except MCPError as error:
                        out["refused"].append(
                            {"case": case, "code": error.error.code, "message": error.error.message}
                        )
    out["delete_statuses"] = deletes
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    args = parser.parse_args()
    collected = Collected()
    logging.getLogger().addHandler(collected)
    logging.getLogger().setLevel(logging.WARNING)
    out = anyio.run(run, args.url)
    out["warnings"] = collected.lines
    print(json.dumps(out))


if __name__ == "__main__":
    main()
