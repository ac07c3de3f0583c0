#!/usr/bin/env bash
# Installs the Node.js packages the MCP interop tests use (tests/node: the official TypeScript MCP SDK
# v2 client, @modelcontextprotocol/client), exactly as package-lock.json pins them. Idempotent: when
# tests/node/node_modules already matches the lock file, it does nothing.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$repo/tests/node"
node="${NODE:-node}"
npm="${NPM:-npm}"

command -v "$node" >/dev/null || { echo "Node.js ($node) is not installed; the TypeScript SDK tests need Node 20 or later" >&2; exit 1; }
major="$("$node" -p 'process.versions.node.split(".")[0]')"
if (( major < 20 )); then
    echo "Node.js $("$node" --version) is too old; @modelcontextprotocol/client needs Node 20 or later" >&2
    exit 1
fi

# npm writes node_modules/.package-lock.json on install: the same content as the lock file's packages
# means the tree is up to date.
stamp="$dir/node_modules/.package-lock.json"
if [[ -f "$stamp" && "$stamp" -nt "$dir/package-lock.json" ]] \
    && "$node" -e 'require.resolve("@modelcontextprotocol/client", { paths: [process.argv[1]] })' "$dir" 2>/dev/null; then
    exit 0
fi

(cd "$dir" && "$npm" ci --no-audit --no-fund --loglevel=error)
echo "TypeScript MCP SDK ready in $dir/node_modules" >&2
