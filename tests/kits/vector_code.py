"""Environment for a child process whose float results are the same on every x86-64 CI host.

numpy dispatches float32 exp/log/power, and torch its CPU kernels, to AVX-512 code where the host has it; the last
bits then differ from the AVX2 code, so digests of generated chips or processed pixels depend on the host. Tests
that pin such a digest compute it in a child process with this environment: numpy's AVX-512 code off and torch held
to its AVX2 kernels.
"""

from __future__ import annotations

import os
import subprocess
import sys

PORTABLE_VECTOR_CODE = {
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
    "ATEN_CPU_CAPABILITY": "avx2",
}


def run_portably(script: str, *args: str) -> str:
    """Run ``python -c script args...`` with :data:`PORTABLE_VECTOR_CODE`; its standard output, stripped."""
    child = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=os.environ | PORTABLE_VECTOR_CODE,
        check=True,
        capture_output=True,
        text=True,
    )
    return child.stdout.strip()
