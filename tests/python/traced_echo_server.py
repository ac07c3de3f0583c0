"""echo_server.py with OpenTelemetry on (see otel_setup.py): the SDK's server spans continue the trace
whose context the orchestrator put in each request's `params._meta`. Speaks MCP over stdio."""

from __future__ import annotations

import os
import runpy

import otel_setup

otel_setup.setup("echo-server")
runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "echo_server.py"), run_name="__main__")
