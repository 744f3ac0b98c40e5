"""Readiness probes for the local stack: exit 0 only when a service really answers.

    python ready.py kafka HOST:PORT    # broker answers metadata and its controller is known
    python ready.py triton HOST:PORT   # server ready and the `health` model returns a correct inference
"""

from __future__ import annotations

import logging
import sys

import numpy as np


def kafka_ready(bootstrap: str) -> None:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000, client_id="egx-ready")
    try:
        cluster = admin.describe_cluster()
        if not cluster.get("brokers") or cluster.get("controller_id", -1) < 0:
            raise RuntimeError(f"cluster not formed yet: {cluster}")
        admin.list_topics()
    finally:
        admin.close()


def triton_ready(url: str) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=url, network_timeout=10.0)
    if not client.is_server_ready() or not client.is_model_ready("health"):
        raise RuntimeError("server or health model not ready")
    values = np.arange(4, dtype=np.float32)
    tensor = httpclient.InferInput("INPUT", list(values.shape), "FP32")
    tensor.set_data_from_numpy(values)
    result = client.infer("health", [tensor], outputs=[httpclient.InferRequestedOutput("OUTPUT")])
    out = result.as_numpy("OUTPUT")
    if out is None or not np.allclose(out, values * 2.0 + 1.0):
        raise RuntimeError(f"health model answered {out!r}")


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING)
    what, address = argv[1], argv[2]
    try:
        {"kafka": kafka_ready, "triton": triton_ready}[what](address)
    except Exception as exc:  # a probe: any failure means "not ready", with the reason on stderr
        sys.stderr.write(f"{what} not ready: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
