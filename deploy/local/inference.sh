#!/usr/bin/env bash
# The inference service (python -m services.inference) as a stack-managed background process; see worker.sh.
exec "$(dirname "$0")/worker.sh" inference "${1:-status}"
