"""The GPU check script must not crash for a silly reason: run it on the tiny config here (``--smoke``)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_paper_check.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_paper_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_report(report: dict, config: str) -> None:
    assert "error" not in report, report.get("traceback")
    assert report["config"] == config
    assert report["parameters"]["total"] == sum(v for k, v in report["parameters"].items() if k != "total")
    assert report["forward"]["prompt_tokens_shape"][1] == 2
    assert report["generate"]["batch1"]["sequences_shape"] == [1, 16]
    assert report["generate"]["batch4"]["sequences_shape"] == [4, 16]
    assert report["generate"]["batch4"]["prompt_counts"] == [2, 0, 1, 3]


def test_smoke_without_onnx(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    assert load_script().main(["--smoke", "--onnx", "off", "--out", str(out)]) == 0
    check_report(json.loads(out.read_text()), "tiny")


@pytest.mark.slow
def test_smoke_vision_engines(tmp_path: Path) -> None:
    """fp32 on CPU: the exported ONNX vision side run by ONNX Runtime matches PyTorch eager at batch 1 and 8."""
    out = tmp_path / "report.json"
    assert (
        load_script().main(["--smoke", "--dtype", "fp32", "--compile-budget-s", "0", "--out", str(out)]) == 0
    )
    report = json.loads(out.read_text())
    check_report(report, "tiny")
    engines = report["vision"]["engines"]
    assert engines["torch_cuda_graph"] == {"skipped": "no CUDA device"}
    for batch in ("batch1", "batch8"):
        assert engines["torch_eager"][batch]["images_per_s"] > 0
        assert engines["ort_cpu"][batch]["max_rel_err_vs_eager"] < 1e-4, engines["ort_cpu"]
        assert "skipped" in engines["torch_compile"][batch]  # budget 0: never started


@pytest.mark.slow
def test_smoke_bf16(tmp_path: Path) -> None:
    """bf16: the model and the eager vision figures run in bfloat16; ONNX (fp32) agrees to bf16 precision."""
    out = tmp_path / "report.json"
    assert (
        load_script().main(["--smoke", "--dtype", "bf16", "--compile-budget-s", "0", "--out", str(out)]) == 0
    )
    report = json.loads(out.read_text())
    check_report(report, "tiny")
    assert report["dtype"] == "bfloat16"
    assert report["vision"]["dtype"] == "bfloat16"
    ort = report["vision"]["engines"]["ort_cpu"]
    assert 0 < max(ort[b]["max_rel_err_vs_eager"] for b in ("batch1", "batch8")) < 0.1, ort


def test_paper_needs_cuda_unless_smoke(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert load_script().main(["--out", str(tmp_path / "r.json")]) == 2


@pytest.mark.gpu
@pytest.mark.slow
def test_paper_on_gpu(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    assert load_script().main(["--out", str(out), "--onnx", "off"]) == 0
    report = json.loads(out.read_text())
    check_report(report, "paper")
    assert report["parameters"]["language_model"] > 6e9
