#!/usr/bin/env bash
# Creates the Python virtual environment that the MCP interop tests use (<repo>/.venv with the official
# `mcp` SDK). Idempotent: when the environment already imports `mcp`, it does nothing.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"
python="${PYTHON:-python3}"

# The trace tests' peers also export their spans over OTLP/gRPC (the SDK, the exporter, grpcio).
imports='import mcp.client.streamable_http, mcp.server.mcpserver, opentelemetry.sdk.trace, opentelemetry.exporter.otlp.proto.grpc.trace_exporter'

if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c "$imports" 2>/dev/null; then
    exit 0
fi

if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check 'mcp>=2,<3' \
    'opentelemetry-sdk>=1.30,<2' 'opentelemetry-exporter-otlp-proto-grpc>=1.30,<2'
"$venv/bin/python" -c "$imports" \
    || { echo "the Python packages in $venv lack the modules the tests use (mcp 2.x, opentelemetry-sdk, its OTLP/gRPC exporter)" >&2; exit 1; }
echo "Python MCP SDK ready in $venv" >&2
