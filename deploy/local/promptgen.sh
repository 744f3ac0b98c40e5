#!/usr/bin/env bash
# The promptgen service (python -m services.promptgen) as a stack-managed background process; see worker.sh.
exec "$(dirname "$0")/worker.sh" promptgen "${1:-status}"
