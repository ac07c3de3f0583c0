#!/usr/bin/env bash
# The same as ./run.sh: everything runs as local processes, no Docker needed.
exec "$(dirname "${BASH_SOURCE[0]}")/run.sh" "$@"
