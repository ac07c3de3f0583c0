"""An MCP client with a chosen identity, for the authentication tests (orchestrator/tests/auth.rs).

Connects to --url with the official Python MCP SDK (2.x), sending `Authorization: Bearer --token` when
given and calling itself --name in `clientInfo`, then lists the tools and, with --call TOOL, calls one
(with --workflow naming a workflow in `_meta`). Prints one JSON line: the tools listed and the call's
result, or, when the server refuses the connection, the refusal (the SDK reports an HTTP 401 as a
JSON-RPC error).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import anyio
import httpx2
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared._httpx_utils import create_mcp_http_client

WORKFLOW_META_KEY = "io.conductorio/workflowId"


def http_error(error: BaseException) -> httpx2.HTTPStatusError | None:
    if isinstance(error, httpx2.HTTPStatusError):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = http_error(inner)
            if found is not None:
                return found
    cause = error.__cause__ or error.__context__
    return http_error(cause) if cause is not None else None


def mcp_error(error: BaseException) -> MCPError | None:
    if isinstance(error, MCPError):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = mcp_error(inner)
            if found is not None:
                return found
    return None


async def probe(args: argparse.Namespace) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else None
    out: dict[str, Any] = {}
    async with create_mcp_http_client(headers=headers) as http:
        async with streamable_http_client(args.url, http_client=http) as (read, write):
            info = types.Implementation(name=args.name, version="1.0")
            async with ClientSession(read, write, client_info=info) as session:
                await session.initialize()
                listed = await session.list_tools()
                out["tools"] = sorted(tool.name for tool in listed.tools)
                if args.call:
                    meta = {WORKFLOW_META_KEY: args.workflow} if args.workflow else None
                    result = await session.call_tool(args.call, json.loads(args.arguments), meta=meta)
                    out["call"] = {
                        "is_error": bool(result.is_error),
                        "text": "\n".join(b.text for b in result.content if isinstance(b, types.TextContent)),
                        "workflow": (result.meta or {}).get(WORKFLOW_META_KEY),
                    }
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--token")
    parser.add_argument("--name", default="python-auth-probe")
    parser.add_argument("--call")
    parser.add_argument("--arguments", default="{}")
    parser.add_argument("--workflow")
    args = parser.parse_args()
    try:
        with anyio.fail_after(60):
            summary = await probe(args)
    except BaseException as error:  # noqa: BLE001 - the test wants the refusal, whatever wraps it
        found = http_error(error)
        refused = mcp_error(error)
        if found is not None:
            summary = {
                "status": found.response.status_code,
                "www_authenticate": found.response.headers.get("www-authenticate"),
            }
        elif refused is not None:
            # The SDK turns an HTTP refusal of a request into a JSON-RPC error response.
            summary = {"refused": {"code": refused.code, "message": str(refused), "data": repr(refused.data)}}
        else:
            raise
    print(json.dumps(summary))
    sys.stdout.flush()


if __name__ == "__main__":
    anyio.run(main)
