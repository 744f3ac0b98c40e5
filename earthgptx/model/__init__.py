"""The EarthGPT-X model (docs/architecture.md): configuration, tokenizer, processor, network and ONNX export.

Laid out like transformers' LLaVA — one job per file::

    configuration_earthgptx.py   EarthGPTXConfig (+ vision/prompt/fusion sub-configs), presets tiny() / paper()
    tokenization_earthgptx.py    the trainable word-level tokenizer of `tiny`, special tokens
    image_processing_earthgptx.py EarthGPTXImageProcessor: per-modality band preprocessing into 13 band slots
    processing_earthgptx.py      EarthGPTXProcessor: prompts, chat template, batching, output parsing (+ the image processor)
    modeling_earthgptx.py        EarthGPTXForConditionalGeneration (forward with loss, generate)
    counting_earthgptx.py        the counting path (centre head, count tokens) and the count copy
    surgery_earthgptx.py         what a training stage does to a model before it trains
    export_onnx.py               the vision side as one ONNX graph, and an onnxruntime runner
    convert_earthgptx_weights.py pretrained DINOv2 / ConvNeXt / Llama parts from local HF-format folders

See ``earthgptx/model/README.md`` for the API.
"""

from transformers import AutoConfig, AutoModelForImageTextToText

from earthgptx.formats import GRID, IMAGE_TOKEN, MODALITIES, SEG_TOKEN, region_token
from earthgptx.model.configuration_earthgptx import (
    CHECKPOINT_FORMAT_VERSION,
    EarthGPTXConfig,
    EarthGPTXFusionConfig,
    EarthGPTXPromptConfig,
    EarthGPTXVisionConfig,
)
from earthgptx.model.image_processing_earthgptx import EarthGPTXImageProcessor
from earthgptx.model.modeling_earthgptx import (
    EarthGPTXForConditionalGeneration,
    EarthGPTXGenerateOutput,
    EarthGPTXOutput,
    EarthGPTXVisionOutput,
)
from earthgptx.model.processing_earthgptx import (
    EarthGPTXProcessor,
    EncodedSample,
    ParsedAnswer,
    parse_answer,
)
from earthgptx.model.tokenization_earthgptx import add_special_tokens, build_tokenizer

# Let the Auto* factories (and AutoTokenizer, which reads config.json) recognise a saved EarthGPT-X folder.
AutoConfig.register(EarthGPTXConfig.model_type, EarthGPTXConfig, exist_ok=True)
AutoModelForImageTextToText.register(EarthGPTXConfig, EarthGPTXForConditionalGeneration, exist_ok=True)

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "GRID",
    "IMAGE_TOKEN",
    "MODALITIES",
    "SEG_TOKEN",
    "EarthGPTXConfig",
    "EarthGPTXForConditionalGeneration",
    "EarthGPTXFusionConfig",
    "EarthGPTXGenerateOutput",
    "EarthGPTXImageProcessor",
    "EarthGPTXOutput",
    "EarthGPTXProcessor",
    "EarthGPTXPromptConfig",
    "EarthGPTXVisionConfig",
    "EarthGPTXVisionOutput",
    "EncodedSample",
    "ParsedAnswer",
    "add_special_tokens",
    "build_tokenizer",
    "parse_answer",
    "region_token",
]
