#!/usr/bin/env bash
# The resultstore service (python -m services.resultstore) as a stack-managed background process; see worker.sh.
exec "$(dirname "$0")/worker.sh" resultstore "${1:-status}"
