"""Drives Conductorio as an ordinary MCP client would, with the official Python MCP SDK (2.x).

Used by the Rust integration tests (orchestrator/tests/mcp_python.rs). Connects over Streamable HTTP
(--url) or by launching `orchestrator --stdio` (--stdio COMMAND ARGS...), in either protocol era
(--era handshake: `initialize`; --era modern: `server/discover`, no session), then:

  1. lists the tools (with their input schemas),
  2. calls process_data before validate_data: refused with isError and the rule in the text,
  3. calls validate_data, then process_data again: both succeed,
  4. with --approval: create_backup, then restore_backup, which waits at an approval gate while the
     test approves it through the gRPC API; progress notifications name the approval.

Prints one JSON summary line on stdout for the test to check; anything unexpected raises (exit 1).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import anyio
from mcp import ClientSession, types
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

WORKFLOW_META_KEY = "io.conductorio/workflowId"

CUSTOMERS = [
    {"id": "1", "name": "Ada Lovelace", "email": "ada@example.com"},
    {"id": "2", "name": "Alan Turing", "email": "alan@example.com"},
]


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))


def summary_of(result: types.CallToolResult) -> dict[str, Any]:
    return {
        "is_error": bool(result.is_error),
        "text": text_of(result),
        "structured": result.structured_content,
        "meta": result.meta,
    }


class Flow:
    def __init__(self, session: ClientSession, era: str) -> None:
        self.session = session
        self.era = era
        self.workflow_id: str | None = None

    async def call(self, name: str, arguments: dict[str, Any], **kwargs: Any) -> types.CallToolResult:
        # Session-free clients name their workflow in every request; handshake clients need not.
        meta = {WORKFLOW_META_KEY: self.workflow_id} if self.era == "modern" and self.workflow_id else None
        result = await self.session.call_tool(name, arguments, meta=meta, **kwargs)
        assert isinstance(result, types.CallToolResult), f"unexpected result type {type(result)}"
        workflow = (result.meta or {}).get(WORKFLOW_META_KEY)
        assert workflow, f"{name}: the result does not name its workflow: {result}"
        if self.workflow_id is None:
            self.workflow_id = workflow
        assert workflow == self.workflow_id, f"{name} ran in workflow {workflow}, not {self.workflow_id}"
        return result

    async def run(self, approval: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"era": self.era}
        if self.era == "modern":
            discovered = await self.session.discover()
            out["protocol_version"] = self.session.protocol_version
            # A discovery result names versions and capabilities; the server's identity is optional.
            out["supported_versions"] = discovered.supported_versions
        else:
            initialized = await self.session.initialize()
            out["protocol_version"] = initialized.protocol_version
            out["server_name"] = initialized.server_info.name

        listed = await self.session.list_tools()
        out["tools"] = {tool.name: tool.input_schema for tool in listed.tools}

        denied = await self.call("process_data", {"records": CUSTOMERS, "dedupe_by": "email"})
        assert denied.is_error, f"process_data before validate_data was not refused: {summary_of(denied)}"
        out["denied"] = summary_of(denied)

        validated = await self.call("validate_data", {"records": CUSTOMERS, "schema": "customer"})
        assert not validated.is_error, f"validate_data failed: {summary_of(validated)}"
        out["validated"] = summary_of(validated)

        processed = await self.call("process_data", {"records": CUSTOMERS, "dedupe_by": "email"})
        assert not processed.is_error, f"process_data after validate_data failed: {summary_of(processed)}"
        out["processed"] = summary_of(processed)

        if approval:
            backup = await self.call("create_backup", {"name": "mcp-interop", "data": CUSTOMERS, "overwrite": True})
            assert not backup.is_error, f"create_backup failed: {summary_of(backup)}"
            progress: list[str] = []

            async def on_progress(value: float, total: float | None, message: str | None) -> None:
                progress.append(message or "")

            restored = await self.call("restore_backup", {"name": "mcp-interop"}, progress_callback=on_progress)
            out["restored"] = summary_of(restored)
            out["progress"] = progress
        out["workflow_id"] = self.workflow_id
        return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="the orchestrator's Streamable HTTP endpoint, e.g. http://127.0.0.1:8080/mcp")
    target.add_argument("--stdio", nargs=argparse.REMAINDER, help="command and arguments of `orchestrator --stdio`")
    parser.add_argument("--era", choices=["handshake", "modern"], default="handshake")
    parser.add_argument("--approval", action="store_true", help="also run the approval-gated restore")
    args = parser.parse_args()
    client_info = types.Implementation(name="python-interop-test", version="1.0")

    if args.url:
        async with streamable_http_client(args.url) as (read, write):
            async with ClientSession(read, write, client_info=client_info) as session:
                summary = await Flow(session, args.era).run(args.approval)
    else:
        command, *rest = args.stdio
        params = StdioServerParameters(command=command, args=rest)
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write, client_info=client_info) as session:
                summary = await Flow(session, args.era).run(args.approval)
    print(json.dumps(summary))
    sys.stdout.flush()


if __name__ == "__main__":
    anyio.run(main)
