"""A small downstream MCP server written with the official Python MCP SDK (2.x), for the orchestrator's
MCP-client tests (orchestrator/tests/mcp_downstream.rs). Speaks MCP over stdio.

Tools:
  echo(text)       -> the text back
  pid()            -> this process's id (so a test can see a restart)
  misbehave(mode)  -> "crash": exits at once; "hang": never answers; "garbage": writes a line that is
                      not JSON-RPC to stdout instead of answering
  snapshot()       -> a text block and a PNG image block (several blocks, one not text)
  forecast(city)   -> a structured result beside its text, from a tool listed with a title,
                      annotations and an output schema
  count(n)         -> reports progress n times ("step i of n") when the call asked for it, then
                      answers
  chatty()         -> sends three log messages (info, debug, warning) while it runs, then answers
  ask_model(q)     -> asks the client's model (sampling/createMessage) and answers with its reply
  nap(seconds)     -> sleeps (cancellable), then answers

Resources: notes://readme (text), notes://pixel (binary), the template notes://day/{day};
prompts: greet(name) (one user message); completion of greet's name and of the template's day.
"""

from __future__ import annotations

import fcntl
import os
import warnings
import stat
import time

from typing import TypedDict

from mcp import types
from mcp.server.mcpserver import Context, MCPServer

# `chatty` logs on purpose, for the clients of the session eras that still hear log messages.
warnings.filterwarnings("ignore", message="The (logging|sampling) capability is deprecated")

server = MCPServer("echo-server")


@server.tool(description="Returns the text it was given.")
def echo(text: str) -> str:
    return text


@server.tool(description="The server's process id.")
def pid() -> int:
    return os.getpid()


def wire_fd() -> int:
    """The descriptor the SDK writes protocol frames to: it moves the real stdout to a private duplicate
    (a write-only pipe above 2) and points fd 1 at stderr, so a stray print cannot corrupt the stream."""
    stdin = os.fstat(0).st_ino
    for fd in range(3, 256):
        try:
            info = os.fstat(fd)
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        except OSError:
            continue
        if stat.S_ISFIFO(info.st_mode) and info.st_ino != stdin and flags & os.O_ACCMODE == os.O_WRONLY:
            return fd
    return 1


@server.tool(description="Misbehaves on purpose: mode is crash, hang or garbage.")
def misbehave(mode: str) -> str:
    if mode == "crash":
        os._exit(3)
    if mode == "garbage":
        os.write(wire_fd(), b"this is not JSON-RPC {{{\n")
        time.sleep(3600)
    if mode == "hang":
        time.sleep(3600)
    raise ValueError(f"unknown mode {mode!r}; use crash, hang or garbage")


# The smallest valid PNG (1x1, transparent), base64.
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


@server.tool(description="A caption and a picture.")
def snapshot() -> list[types.ContentBlock]:
    return [
        types.TextContent(type="text", text="a one-pixel picture"),
        types.ImageContent(type="image", data=PIXEL, mime_type="image/png"),
    ]


class Forecast(TypedDict):
    city: str
    celsius: float


@server.tool(
    title="Weather forecast",
    description="Tomorrow's temperature in a city.",
    annotations=types.ToolAnnotations(read_only_hint=True, destructive_hint=False, open_world_hint=False),
)
def forecast(city: str) -> Forecast:
    return {"city": city, "celsius": 21.5}


@server.tool(description="Counts to n, reporting progress at each step.")
async def count(n: int, ctx: Context) -> str:
    for i in range(1, n + 1):
        await ctx.report_progress(i, n, f"step {i} of {n}")
    return f"counted to {n}"


@server.tool(description="Sends three log messages while it runs.")
async def chatty(ctx: Context) -> str:
    await ctx.info("chatty started")
    await ctx.debug("chatty details")
    await ctx.warning("chatty is almost done")
    return "chatted"


@server.tool(description="Asks the client's model a question and answers with its reply.")
async def ask_model(question: str, ctx: Context) -> str:
    reply = await ctx.session.create_message(
        [types.SamplingMessage(role="user", content=types.TextContent(type="text", text=question))],
        max_tokens=50,
    )
    text = reply.content.text if isinstance(reply.content, types.TextContent) else str(reply.content)
    return f"the model said: {text}"


@server.tool(description="Sleeps for the given seconds, then answers.")
async def nap(seconds: float) -> str:
    import anyio

    await anyio.sleep(seconds)
    return "rested"


@server.resource("notes://readme", name="readme", mime_type="text/plain")
def readme() -> str:
    return "Read me first."


@server.resource("notes://pixel", name="pixel", mime_type="image/png")
def pixel() -> bytes:
    import base64

    return base64.b64decode(PIXEL)


@server.resource("notes://day/{day}", name="day", mime_type="text/plain")
def day(day: str) -> str:
    return f"Notes of {day}."


@server.prompt(description="Greets someone.")
def greet(name: str) -> str:
    return f"Please greet {name} warmly."


@server.completion()
async def complete(ref, argument, context):
    if argument.name in ("name", "day"):
        options = ["monday", "mona", "tuesday"] if argument.name == "day" else ["ada", "alan", "grace"]
        return types.Completion(values=[o for o in options if o.startswith(argument.value)])
    return None


if __name__ == "__main__":
    server.run()
