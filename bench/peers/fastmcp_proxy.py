"""FastMCP's proxy in front of the bench's echo server (figure 4 of conductor-bench).

Usage: python fastmcp_proxy.py BACKEND_MCP_URL PORT
Serves Streamable HTTP at http://127.0.0.1:PORT/mcp with FastMCP's default proxy settings.
"""
import sys

from fastmcp.server import create_proxy

backend, port = sys.argv[1], int(sys.argv[2])
proxy = create_proxy(backend, name="fastmcp-proxy")
proxy.run(transport="http", host="127.0.0.1", port=port, log_level="warning")
