#!/usr/bin/env bash
# Runs every test of the workspace. Installs what the tests need first: a Python virtual environment
# (.venv) with the official MCP SDK, used as a real MCP client and server by the interop tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
scripts/setup-python-venv.sh
cargo test --workspace --no-fail-fast "$@"
