"""The rules follow the agent (issue 30), driven by the official Python MCP SDK's high-level client.

Used by the Rust integration tests (orchestrator/tests/it/mcp_eras.rs). `mcp.Client` at its defaults
(--mode modern: it probes `server/discover` and speaks 2026-07-28, no `initialize`, no session) or with
`mode="legacy"` (--mode legacy: the `initialize` handshake and an HTTP session), with a bearer token,
runs one scenario against the shipped configuration's rules:

  1. sequence: process_data before validate_data is refused (session-free: the refusal says how to keep
     the workflow: `conductorio_workflow` and the handle); validate_data, passed no handle, lands in the
     same workflow (the identity's current one), and process_data then runs;
  2. conditional: in a new ad-hoc workflow (conductor_start_workflow), a failed validate_data does not
     unlock create_backup (backup-needs-valid-data); a valid one does;
  3. template: conductor_start_workflow binds order_summary; a step out of order is refused naming the
     next one; the three steps then run in order, in the template's workflow;
  4. approval: in a new ad-hoc workflow, restore_backup waits at its gate with progress naming the
     approval (the test approves it through gRPC) and runs;
  5. flow: after restore_backup (private) and list_notifications (untrusted), send_notification
     (egress) is refused by the flow rule, naming the calls that brought each label in;
  6. laundering: a new workflow started by the model (conductor_start_workflow) still carries the
     labels, so egress stays refused;
  7. conductor_end_workflow ends the workflows (session-free: each one it holds a handle of; in a
     session, the bound one, and the session's close ends the rest).

Session-free, the agent passes back the handle it was last given (`conductorio_workflow`), except
where a step checks that no handle is needed. Prints one JSON summary line on stdout for the test to
check; a transport failure raises (exit 1); refusals and protocol errors of calls are recorded for the
test to judge.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import anyio
from mcp import Client, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

HANDLE_ARGUMENT = "conductorio_workflow"
WORKFLOW_META_KEY = "io.conductorio/workflowId"
HANDLE_META_KEY = "io.conductorio/workflowHandle"

CUSTOMERS = [
    {"id": "1", "name": "Ada Lovelace", "email": "ada@example.com"},
    {"id": "2", "name": "Alan Turing", "email": "alan@example.com"},
]
NO_EMAIL = [{"id": "3", "name": "Nobody"}]
ORDERS = [
    {"id": "o-1", "customer_id": "c-1", "amount": 120.5},
    {"id": "o-2", "customer_id": "c-1", "amount": 30},
    {"id": "o-3", "customer_id": "c-2", "amount": 99},
]
NOTE = {"channel": "log", "recipient": "ops", "subject": "Report", "body": "what the agent read"}


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))


class Agent:
    """An agent as a model drives it: calls tools and, session-free, passes back the last handle."""

    def __init__(self, client: Client, mode: str) -> None:
        self.client = client
        self.mode = mode
        self.handle: str | None = None
        # Every handle the agent was given, to end each workflow it holds at the end.
        self.handles: list[str] = []

    def learn(self, handle: str | None) -> None:
        if handle:
            self.handle = handle
            if handle not in self.handles:
                self.handles.append(handle)

    async def call(
        self, name: str, arguments: dict[str, Any], *, pass_handle: bool = True, **kwargs: Any
    ) -> dict[str, Any]:
        arguments = dict(arguments)
        if self.mode == "modern" and pass_handle and self.handle:
            arguments[HANDLE_ARGUMENT] = self.handle
        try:
            result = await self.client.call_tool(name, arguments, **kwargs)
        except MCPError as error:
            # A protocol error (e.g. an unknown tool) is an outcome for the test to judge, like a refusal.
            return {
                "is_error": True,
                "protocol_error": {"code": error.code, "message": error.message},
                "text": error.message,
                "texts": [],
                "structured": None,
                "meta": {},
                "workflow_id": None,
                "handle": None,
                "sent_handle": arguments.get(HANDLE_ARGUMENT),
            }
        meta = result.meta or {}
        structured = result.structured_content
        handle = meta.get(HANDLE_META_KEY)
        if name == "conductor_start_workflow" and isinstance(structured, dict):
            handle = structured.get("workflow_handle") or handle
        self.learn(handle)
        return {
            "is_error": bool(result.is_error),
            "text": text_of(result),
            "texts": [block.text for block in result.content if isinstance(block, types.TextContent)],
            "structured": structured,
            "meta": meta,
            "workflow_id": meta.get(WORKFLOW_META_KEY),
            "handle": handle,
            "sent_handle": arguments.get(HANDLE_ARGUMENT),
            "protocol_error": None,
        }

    async def run(self) -> dict[str, Any]:
        client = self.client
        out: dict[str, Any] = {"mode": self.mode, "protocol_version": client.protocol_version}
        listed = await client.list_tools()
        out["tools"] = {tool.name: tool.input_schema for tool in listed.tools}

        # 1. A sequence rule satisfied by an earlier call, with no handle passed until the last call.
        refused = await self.call("process_data", {"records": CUSTOMERS, "dedupe_by": "email"})
        validated = await self.call("validate_data", {"records": CUSTOMERS, "schema": "customer"}, pass_handle=False)
        processed = await self.call("process_data", {"records": CUSTOMERS, "dedupe_by": "email"})
        out["sequence"] = {"refused": refused, "validated": validated, "processed": processed}

        # 2. A conditional rule, in a new ad-hoc workflow.
        backup = f"rules-follow-{self.mode}"
        started = await self.call("conductor_start_workflow", {})
        invalid = await self.call("validate_data", {"records": NO_EMAIL, "schema": "customer"})
        processed = await self.call("process_data", {"records": CUSTOMERS, "dedupe_by": "email"})
        backup_args = {"name": backup, "data": CUSTOMERS, "overwrite": True}
        refused = await self.call("create_backup", backup_args)
        validated = await self.call("validate_data", {"records": CUSTOMERS, "schema": "customer"})
        backed_up = await self.call("create_backup", backup_args)
        out["conditional"] = {
            "started": started,
            "invalid": invalid,
            "processed": processed,
            "refused": refused,
            "validated": validated,
            "backed_up": backed_up,
        }

        # 3. A template run bound by conductor_start_workflow and driven step by step.
        started = await self.call("conductor_start_workflow", {"template": "order_summary", "input": {"orders": ORDERS}})
        aggregate = {"records": ORDERS, "aggregate": {"group_by": "customer_id", "sum": ["amount"]}}
        out_of_order = await self.call("process_data", aggregate)
        steps = [
            await self.call("validate_data", {"records": ORDERS, "schema": "order"}),
            await self.call("process_data", aggregate),
            await self.call(
                "send_notification",
                {"channel": "log", "recipient": "finance", "subject": "Order summary", "body": "totals"},
            ),
        ]
        out["template"] = {"started": started, "out_of_order": out_of_order, "steps": steps}

        # 4. An approval gate with progress, in a new ad-hoc workflow.
        started = await self.call("conductor_start_workflow", {})
        progress: list[str] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append(message or "")

        restored = await self.call("restore_backup", {"name": backup}, progress_callback=on_progress)
        out["approval"] = {"started": started, "restored": restored, "progress": progress}

        # 5. A flow rule: egress after private (restore_backup) and untrusted reads.
        untrusted = await self.call("list_notifications", {})
        egress = await self.call("send_notification", NOTE)
        out["flow"] = {"untrusted": untrusted, "egress": egress}

        # 6. The model starts a new workflow to shed the labels: they follow it.
        started = await self.call("conductor_start_workflow", {})
        egress = await self.call("send_notification", NOTE)
        out["laundering"] = {"started": started, "egress": egress}

        # 7. The end: nothing left running.
        ended = [await self.call("conductor_end_workflow", {})]
        if self.mode == "modern":
            current = self.handle
            for handle in self.handles:
                if handle != current:
                    self.handle = handle
                    ended.append(await self.call("conductor_end_workflow", {}))
        out["ended"] = ended
        return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the orchestrator's Streamable HTTP endpoint")
    parser.add_argument("--mode", choices=["modern", "legacy"], default="modern")
    parser.add_argument("--token", help="the bearer token of the identity to call as")
    parser.add_argument("--client-name", default="python-rules-follow")
    args = parser.parse_args()
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else None
    client_info = types.Implementation(name=args.client_name, version="1.0")
    async with create_mcp_http_client(headers=headers) as http:
        transport = streamable_http_client(args.url, http_client=http)
        # The defaults, but for the era under test: modern is the SDK's default (`mode="auto"`).
        options: dict[str, Any] = {"mode": "legacy"} if args.mode == "legacy" else {}
        async with Client(transport, client_info=client_info, **options) as client:
            summary = await Agent(client, args.mode).run()
    print(json.dumps(summary))
    sys.stdout.flush()


if __name__ == "__main__":
    anyio.run(main)
