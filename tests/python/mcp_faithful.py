"""The official Python MCP SDK (2.x) as a client of Conductorio in front of a Python MCP server
(echo_server.py), in the session era (legacy mode: sampling is of that era), for the Rust test
orchestrator/tests/it/mcp_offered.rs. Checks that what the server gives passes through as it gave it:

  1. snapshot: a text block and an image block,
  2. count(3) with a progress callback: three progress notifications, then the answer,
  3. resources/read of notes://readme before echo: refused (a rule), as a JSON-RPC error,
  4. ask_model: the server's sampling request reaches this client's sampling callback, and its
     reply reaches the server (the tool answers with it).

Prints one JSON summary line on stdout; anything unexpected raises (exit 1).
"""

from __future__ import annotations

import argparse
import json
import warnings

import anyio
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

warnings.filterwarnings("ignore", message="The (logging|sampling) capability is deprecated")


async def sampled(context, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    asked = params.messages[0].content
    question = asked.text if isinstance(asked, types.TextContent) else "?"
    return types.CreateMessageResult(
        role="assistant",
        content=types.TextContent(type="text", text=f"forty-two, to {question!r}"),
        model="test-model",
        stop_reason="endTurn",
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    args = parser.parse_args()
    out: dict = {}
    async with streamable_http_client(args.url) as (read, write):
        async with ClientSession(
            read,
            write,
            client_info=types.Implementation(name="python-faithful-test", version="1"),
            sampling_callback=sampled,
        ) as session:
            await session.initialize()
            snapshot = await session.call_tool("snapshot", {})
            out["snapshot"] = [block.type for block in snapshot.content]
            out["image_mime"] = next(
                (b.mime_type for b in snapshot.content if isinstance(b, types.ImageContent)), None
            )

            progress: list[str] = []

            async def on_progress(value: float, total: float | None, message: str | None) -> None:
                progress.append(message or "")

            counted = await session.call_tool("count", {"n": 3}, progress_callback=on_progress)
            out["count"] = "\n".join(b.text for b in counted.content if isinstance(b, types.TextContent))
            out["progress"] = progress

            try:
                await session.read_resource("notes://readme")
                out["refused"] = None
            except MCPError as error:
                out["refused"] = str(error)

            answered = await session.call_tool("ask_model", {"question": "the answer?"})
            out["ask_model"] = "\n".join(
                b.text for b in answered.content if isinstance(b, types.TextContent)
            )
            out["ask_model_error"] = bool(answered.is_error)
    print(json.dumps(out))


if __name__ == "__main__":
    anyio.run(main)
