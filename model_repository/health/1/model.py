"""Health model: OUTPUT = 2 * INPUT + 1, one response per request, in order.

Tensors cross the stub boundary through DLPack (torch), never as NumPy arrays: the stub's pybind11 NumPy bridge
in the pytriton build was compiled for NumPy 1.x and misreads NumPy 2 arrays (zeros in, wrong sizes out), while
DLPack is ABI-stable. The real models do the same.
"""

from __future__ import annotations

import json
import os
import site

# The backend stub embeds an isolated interpreter that ignores PYTHONPATH; deploy/local/triton.sh passes the
# project's environment in EGX_PYTHONPATH instead (site-packages first, so .pth files are honoured).
for _entry in os.environ.get("EGX_PYTHONPATH", "").split(os.pathsep):
    if _entry:
        site.addsitedir(_entry)

import torch  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402
from torch.utils.dlpack import from_dlpack, to_dlpack  # noqa: E402


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        output = pb_utils.get_output_config_by_name(config, "OUTPUT")
        if output["data_type"] != "TYPE_FP32":
            raise ValueError(f"health model expects an FP32 OUTPUT, config says {output['data_type']}")

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            values = from_dlpack(pb_utils.get_input_tensor_by_name(request, "INPUT").to_dlpack())
            if not bool(torch.isfinite(values).all()):
                error = pb_utils.TritonError("INPUT must be finite")
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                continue
            out = (values.to(torch.float32) * 2.0 + 1.0).contiguous()
            tensor = pb_utils.Tensor.from_dlpack("OUTPUT", to_dlpack(out))
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
        return responses
