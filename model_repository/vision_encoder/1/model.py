"""Triton python model `vision_encoder`: a thin shell; the logic is `earthgptx.serving.triton_models.VisionEncoderModel`."""

from __future__ import annotations

import os
import site

# The backend stub embeds an isolated interpreter that ignores PYTHONPATH; deploy/local/triton.sh (and the compose
# image) pass the project's environment in EGX_PYTHONPATH instead (site-packages first, so .pth files are honoured).
for _entry in os.environ.get("EGX_PYTHONPATH", "").split(os.pathsep):
    if _entry:
        site.addsitedir(_entry)

from earthgptx.serving.triton_models import VisionEncoderModel  # noqa: E402


class TritonPythonModel(VisionEncoderModel):
    """See `earthgptx.serving.triton_models.VisionEncoderModel`."""
