"""The local stack: every service really answers, and `make status` says so."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.triton
def test_triton_health_model_answers_an_inference() -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=os.environ.get("EGX_TRITON_HTTP_URL", "127.0.0.1:58000"))
    assert client.is_server_ready()
    values = np.array([0.5, -2.0, 10.0], dtype=np.float32)
    tensor = httpclient.InferInput("INPUT", list(values.shape), "FP32")
    tensor.set_data_from_numpy(values)
    result = client.infer("health", [tensor], outputs=[httpclient.InferRequestedOutput("OUTPUT")])
    np.testing.assert_allclose(result.as_numpy("OUTPUT"), values * 2 + 1)


@pytest.mark.triton
def test_triton_health_model_rejects_bad_input_per_request() -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(url=os.environ.get("EGX_TRITON_GRPC_URL", "127.0.0.1:58001"))
    values = np.array([1.0, np.nan], dtype=np.float32)
    tensor = grpcclient.InferInput("INPUT", list(values.shape), "FP32")
    tensor.set_data_from_numpy(values)
    with pytest.raises(InferenceServerException, match="finite"):
        client.infer("health", [tensor])
    # The server keeps serving after a bad request.
    good = grpcclient.InferInput("INPUT", [1], "FP32")
    good.set_data_from_numpy(np.array([3.0], dtype=np.float32))
    assert client.infer("health", [good]).as_numpy("OUTPUT").tolist() == [7.0]


@pytest.mark.kafka
@pytest.mark.postgis
@pytest.mark.minio
@pytest.mark.triton
def test_status_reports_every_service_up() -> None:
    out = subprocess.run(["bash", str(REPO / "deploy/local/stack.sh"), "status"], capture_output=True,
                         text=True, timeout=120)
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert out.returncode == 0, out.stdout + out.stderr
    names = {line.split()[0]: line.split()[1] for line in lines}
    assert names == {"postgres": "up", "kafka": "up", "minio": "up", "triton": "up", "ingest": "up", "promptgen": "up",
                     "inference": "up", "resultstore": "up", "martin": "up", "api": "up"}
    assert all("127.0.0.1:" in line for line in lines)
