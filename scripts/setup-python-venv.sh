#!/usr/bin/env bash
# Creates the Python virtual environment that the MCP interop tests use (<repo>/.venv with the official
# `mcp` SDK). Idempotent: when the environment already imports `mcp`, it does nothing.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"
python="${PYTHON:-python3}"

if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c 'import mcp.client.streamable_http, mcp.server.mcpserver' 2>/dev/null; then
    exit 0
fi

if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check 'mcp>=2,<3'
"$venv/bin/python" -c 'import mcp.client.streamable_http, mcp.server.mcpserver' \
    || { echo "the mcp package in $venv lacks the 2.x modules the tests use" >&2; exit 1; }
echo "Python MCP SDK ready in $venv" >&2
