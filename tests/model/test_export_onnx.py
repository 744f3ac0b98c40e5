from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from earthgptx.model import EarthGPTXConfig, EarthGPTXForConditionalGeneration
from earthgptx.model.counting_earthgptx import centre_peaks
from earthgptx.model.export_onnx import (
    COUNT_OUTPUT_NAMES,
    INPUT_NAMES,
    OUTPUT_NAMES,
    EarthGPTXVisionOnnx,
    VisionOnnxRunner,
    example_inputs,
    export_vision_onnx,
)

pytestmark = pytest.mark.slow  # one export takes ~15 s on two cores


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, model: EarthGPTXForConditionalGeneration) -> Path:
    return export_vision_onnx(model, tmp_path_factory.mktemp("onnx") / "vision.onnx")


def test_signature_is_fixed_and_dynamic(exported: Path) -> None:
    graph = onnx.load(str(exported)).graph
    assert [i.name for i in graph.input] == list(INPUT_NAMES)
    assert [o.name for o in graph.output] == list(OUTPUT_NAMES)
    elem = onnx.TensorProto
    assert [i.type.tensor_type.elem_type for i in graph.input] == [
        elem.FLOAT,
        elem.INT64,
        elem.FLOAT,
        elem.BOOL,
    ]

    def dims(value: onnx.ValueInfoProto) -> list[str | int]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    pixel, modality, masks, valid = (dims(i) for i in graph.input)
    assert isinstance(pixel[0], str) and pixel[1:] == [13, 128, 128]
    assert modality[0] == pixel[0] and masks[0] == pixel[0]
    assert isinstance(masks[1], str) and valid[1] == masks[1]
    prompt_tokens = dims(graph.output[1])
    assert prompt_tokens[1] == masks[1] and prompt_tokens[2:] == [4, 256]


@pytest.mark.parametrize(("batch", "prompts", "seed"), [(1, 1, 101), (3, 5, 202), (2, 8, 303)])
def test_parity_with_pytorch_on_fresh_inputs(
    exported: Path, model: EarthGPTXForConditionalGeneration, batch: int, prompts: int, seed: int
) -> None:
    inputs = example_inputs(model.config.image_size, batch, prompts, seed=seed)
    with torch.no_grad():
        expected = EarthGPTXVisionOnnx(model).eval()(*inputs)
    got = VisionOnnxRunner(exported).run(*inputs)
    for name, reference in zip(OUTPUT_NAMES, expected, strict=True):
        reference = reference.numpy()
        assert got[name].shape == reference.shape, name
        # relative to the output's scale: max |onnx - torch| / max |torch|
        relative = np.abs(got[name] - reference).max() / np.abs(reference).max()
        assert relative < 1e-4, f"{name}: relative error {relative:.2e}"


@pytest.mark.parametrize("rule", ["per_class", "across_classes"])
def test_counting_path_exports_with_parity(
    tmp_path: Path, model: EarthGPTXForConditionalGeneration, rule: str
) -> None:
    config = EarthGPTXConfig.from_dict({**model.config.to_dict(), "count_classes": 5, "count_peaks": rule})
    torch.manual_seed(7)
    counting = EarthGPTXForConditionalGeneration(config).eval()
    counting_path = counting.counting_path
    assert counting_path is not None
    # trained, not the zero start: the head finds peaks
    torch.nn.init.normal_(counting_path.count_head.out.weight, std=0.5)
    torch.nn.init.zeros_(counting_path.count_head.out.bias)
    path = export_vision_onnx(counting, tmp_path / "vision.onnx")
    inputs = example_inputs(config.image_size, 2, 3, seed=404)
    with torch.no_grad():
        expected = EarthGPTXVisionOnnx(counting).eval()(*inputs)
        plain = EarthGPTXVisionOnnx(model).eval()(*inputs)
        detected = counting.encode_vision(*inputs)
    assert detected.centre_logits is not None
    assert centre_peaks(detected.centre_logits, config.count_threshold, rule=rule).sum() > 0
    got = VisionOnnxRunner(path).run(*inputs)
    extra = {"IMAGE_TOKENS": (1, 5), "PROMPT_TOKENS": (2, 5)}  # (axis, count tokens) per token output
    assert tuple(got) == OUTPUT_NAMES + COUNT_OUTPUT_NAMES
    for name, reference, other in zip(OUTPUT_NAMES, expected[:3], plain, strict=True):
        shape = list(other.shape)  # the signature without the path, with the count tokens appended
        if name in extra:
            shape[extra[name][0]] += extra[name][1]
        assert got[name].shape == tuple(shape), name
        reference = reference.numpy()
        relative = np.abs(got[name] - reference).max() / np.abs(reference).max()
        assert relative < 1e-4, f"{name}: relative error {relative:.2e}"
    # the counts the count copy needs beside the language model: what encode_vision gives
    assert detected.count_mix is not None and detected.region_count_mix is not None
    levels = config.count_max + 1
    for name, reference in zip(
        COUNT_OUTPUT_NAMES, (detected.count_mix, detected.region_count_mix), strict=True
    ):
        assert got[name].shape == tuple(reference.shape), name
        np.testing.assert_allclose(got[name], reference.numpy(), atol=1e-5, err_msg=name)
    assert got["COUNT_MIX"].shape == (2, 5, levels) and got["REGION_COUNT_MIX"].shape == (2, 3, 5, levels)
    assert got["COUNT_MIX"].argmax(-1).max() > 0  # some class is counted (the parity is not all zeros)


def test_runner_rejects_a_foreign_graph(tmp_path: Path) -> None:
    node = onnx.helper.make_node("Identity", ["X"], ["Y"])
    graph = onnx.helper.make_graph(
        [node],
        "g",
        [onnx.helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "other.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)]), str(path))
    with pytest.raises(ValueError, match="expected"):
        VisionOnnxRunner(path)
