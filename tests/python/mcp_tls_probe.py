"""An MCP client over https, for the TLS tests (orchestrator/tests/it/tls.rs).

Connects to --url (https) with the official Python MCP SDK (2.x), trusting the CA in --ca (a PEM file)
and, with --cert and --key, presenting a client certificate (mutual TLS). Lists the tools and, with
--call TOOL, calls one with --arguments. Prints one JSON line: the tools listed and the call's result,
or {"refused": "..."} when the connection or the session is refused (a TLS handshake the server
refuses, an HTTP error).
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
from typing import Any

import anyio
import httpx2
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client


def first_error(error: BaseException) -> BaseException:
    """The innermost error of an exception group (what the SDK's task groups wrap)."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


async def probe(args: argparse.Namespace) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=args.ca)
    if args.cert:
        context.load_cert_chain(args.cert, args.key)
    timeout = httpx2.Timeout(30.0, read=300.0)
    out: dict[str, Any] = {}
    async with httpx2.AsyncClient(verify=context, timeout=timeout) as http:
        async with streamable_http_client(args.url, http_client=http) as (read, write):
            info = types.Implementation(name="python-tls-probe", version="1.0")
            async with ClientSession(read, write, client_info=info) as session:
                await session.initialize()
                listed = await session.list_tools()
                out["tools"] = sorted(tool.name for tool in listed.tools)
                if args.call:
                    result = await session.call_tool(args.call, json.loads(args.arguments))
                    out["call"] = {
                        "is_error": bool(result.is_error),
                        "text": "\n".join(b.text for b in result.content if isinstance(b, types.TextContent)),
                    }
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--call")
    parser.add_argument("--arguments", default="{}")
    args = parser.parse_args()
    try:
        out = await probe(args)
    except Exception as error:  # noqa: BLE001 - any refusal is the answer
        inner = first_error(error)
        # The SDK turns an HTTP refusal of a request into a JSON-RPC error; its data says why.
        data = getattr(inner, "data", None)
        out = {"refused": f"{type(inner).__name__}: {inner} {data!r}"}
    print(json.dumps(out), flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    anyio.run(main)
