#!/usr/bin/env bash
# Runs every test of the workspace. Installs what the tests need first: a Python virtual environment
# (.venv) with the official MCP SDK, used as a real MCP client and server by the interop tests, and
# the official TypeScript MCP SDK client (tests/node/node_modules), a real client of the same tests;
# and PostgreSQL's server programs, for the PostgreSQL audit store's tests (they start their own).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
scripts/setup-python-venv.sh
scripts/setup-node-deps.sh
scripts/setup-conformance.sh
scripts/setup-postgres.sh
cargo test --workspace --no-fail-fast "$@"
