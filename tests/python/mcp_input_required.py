"""The official Python MCP SDK (2.x) as a session-free (2026-07-28) client of Conductorio in front of
the conformance fixture (an rmcp server that speaks that era), for the Rust test
orchestrator/tests/it/mcp_input_required.rs. The server's input requests (SEP-2322) reach this client
as `input_required` results, which the SDK answers through its callbacks and retries:

  1. test_input_required_result_elicitation: the elicitation callback's name comes back in the result,
  2. test_input_required_result_multi_round: two rounds, two elicitations, the second's answer in it,
  3. test_input_required_result_sampling and _list_roots: the sampling and roots callbacks' answers,
  4. the prompt test_input_required_result_prompt: a prompts/get that needs input first,
  5. test_missing_capability: this client declares sampling, so the server runs it; a second client
     without sampling gets the server's -32021 as a protocol error,
  6. subscriptions/listen: acknowledged, with the resource subscription honored.

Prints one JSON summary line on stdout; anything unexpected raises (exit 1).
"""

from __future__ import annotations

import argparse
import json
import warnings

import anyio
from mcp import types
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

warnings.filterwarnings("ignore", message="The (logging|sampling) capability is deprecated")

asked: list[str] = []


async def elicited(context, params: types.ElicitRequestParams) -> types.ElicitResult:
    asked.append("elicitation/create")
    message = params.message
    if "colou" in message.lower() or "color" in message.lower():
        return types.ElicitResult(action="accept", content={"color": "teal"})
    if "context" in message.lower():
        return types.ElicitResult(action="accept", content={"context": "from the python client"})
    return types.ElicitResult(action="accept", content={"name": "Ada"})


async def sampled(context, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    asked.append("sampling/createMessage")
    return types.CreateMessageResult(
        role="assistant",
        content=types.TextContent(type="text", text="Paris, said the python client"),
        model="test-model",
        stop_reason="endTurn",
    )


async def rooted(context) -> types.ListRootsResult:
    asked.append("roots/list")
    return types.ListRootsResult(roots=[types.Root(uri="file:///python/root", name="python root")])


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(b.text for b in result.content if isinstance(b, types.TextContent))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    args = parser.parse_args()
    out: dict = {}
    client_info = types.Implementation(name="python-input-required", version="1")
    async with Client(
        streamable_http_client(args.url),
        client_info=client_info,
        elicitation_callback=elicited,
        sampling_callback=sampled,
        list_roots_callback=rooted,
    ) as client:
        out["protocol_version"] = client.protocol_version
        out["elicitation"] = text_of(await client.call_tool("test_input_required_result_elicitation", {}))
        out["multi_round"] = text_of(await client.call_tool("test_input_required_result_multi_round", {}))
        out["sampling"] = text_of(await client.call_tool("test_input_required_result_sampling", {}))
        out["roots"] = text_of(await client.call_tool("test_input_required_result_list_roots", {}))
        prompt = await client.get_prompt("test_input_required_result_prompt", {})
        out["prompt"] = [
            m.content.text for m in prompt.messages if isinstance(m.content, types.TextContent)
        ]
        out["declared"] = text_of(await client.call_tool("test_missing_capability", {}))
        async with client.listen(resource_subscriptions=["test://static-text"]) as subscription:
            honored = subscription.honored
            out["listen_honored"] = list((honored and honored.resource_subscriptions) or [])
    out["asked"] = asked
    # A client that declares no sampling: the server refuses with -32021, passed on as it gave it.
    async with Client(streamable_http_client(args.url), client_info=client_info) as bare:
        try:
            await bare.call_tool("test_missing_capability", {})
            out["undeclared"] = None
        except MCPError as error:
            out["undeclared"] = error.error.code
    print(json.dumps(out))


if __name__ == "__main__":
    anyio.run(main)
