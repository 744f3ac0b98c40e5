"""``python -m earthgptx.serving.build``: the repository it writes, the committed part, the staleness check."""

from __future__ import annotations

from pathlib import Path

import pytest

from earthgptx.serving.build import (
    MODEL_NAMES,
    BuildOptions,
    build_repository,
    is_current,
    main,
    write_configs,
)
from earthgptx.serving.version import compute_checkpoint_version
from tests.serving.conftest import CHECKPOINT, REPO_ROOT

COMMITTED = REPO_ROOT / "model_repository"
TINY_SHAPES_ARGS = {"image_size": 128, "image_tokens": 69, "tokens_per_prompt": 9, "hidden": 256,
                    "mask_channels": 64, "count_classes": 5, "count_levels": 9}  # fmt: skip


def _committed_files(root: Path) -> dict[str, str]:
    return {
        f"{name}/{part}": (root / name / part).read_text()
        for name in MODEL_NAMES
        for part in ("config.pbtxt", "1/model.py")
        if (root / name / part).exists()
    }


def test_committed_configs_are_what_the_build_writes(tmp_path: Path) -> None:
    from earthgptx.serving.build import ModelShapes

    write_configs(tmp_path, ModelShapes(**TINY_SHAPES_ARGS), BuildOptions())
    assert _committed_files(tmp_path) == _committed_files(COMMITTED)
    assert len(_committed_files(tmp_path)) == 6


def test_gpu_variant_serves_the_graph_with_tensorrt_fp16(tmp_path: Path) -> None:
    from earthgptx.serving.build import ModelShapes

    write_configs(
        tmp_path, ModelShapes(**TINY_SHAPES_ARGS), BuildOptions(vision_backend="onnxruntime", gpu=True)
    )
    vision = (tmp_path / "vision_encoder" / "config.pbtxt").read_text()
    assert 'backend: "onnxruntime"' in vision and 'name: "tensorrt"' in vision and '"FP16"' in vision
    assert "reshape: { shape: [ ] }" in vision  # MODALITY_IDS is (B,) in the graph
    assert not (tmp_path / "vision_encoder" / "1" / "model.py").exists()
    assert "KIND_GPU" in (tmp_path / "llm" / "config.pbtxt").read_text()
    assert '"bfloat16"' in (tmp_path / "llm" / "config.pbtxt").read_text()


@pytest.mark.slow
def test_build_writes_a_complete_repository_and_skips_when_current(tmp_path: Path) -> None:
    out = tmp_path / "repo"
    assert main(["--model", str(CHECKPOINT), "--out", str(out)]) == 0
    version = compute_checkpoint_version(CHECKPOINT)
    assert is_current(out, version)
    onnx = out / "vision_encoder" / "1" / "model.onnx"
    assert onnx.stat().st_size > 1_000_000
    assert (out / "llm" / "1" / "checkpoint" / "model.safetensors").is_file()
    assert not (out / "earthgptx" / "1" / "checkpoint" / "model.safetensors").exists()  # processor files only
    assert (out / "earthgptx" / "1" / "checkpoint" / "version.txt").read_text().strip() == version
    assert _committed_files(out) == _committed_files(COMMITTED)
    stamp = onnx.stat().st_mtime_ns
    assert build_repository(CHECKPOINT, out, if_stale=True) == version
    assert onnx.stat().st_mtime_ns == stamp  # nothing rebuilt
    (out / "vision_encoder" / "1" / "version.txt").write_text("earthgptx-tiny@000000000000\n")
    assert not is_current(out, version)  # another checkpoint's graph: the next start rebuilds
