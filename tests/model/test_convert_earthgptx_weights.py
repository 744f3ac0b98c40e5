from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import (
    ConvNextConfig,
    ConvNextModel,
    Dinov2Config,
    Dinov2Model,
    LlamaConfig,
    LlamaForCausalLM,
)

from earthgptx.model.convert_earthgptx_weights import (
    build_from_pretrained_parts,
    resample_position_embeddings,
)
from earthgptx.model.tokenization_earthgptx import build_tokenizer, wrap_backend


@pytest.fixture(scope="module")
def pretrained_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Tiny 'pretrained' DINOv2 (trained at 64 px), ConvNeXt and Llama + a tokenizer without our tokens."""
    root = tmp_path_factory.mktemp("pretrained")
    torch.manual_seed(3)
    dinov2 = Dinov2Model(
        Dinov2Config(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            patch_size=8,
            image_size=64,
            mlp_ratio=2,
        )
    )
    convnext = ConvNextModel(ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1]))
    plain = build_tokenizer(["a ship near the harbour", "USER: ASSISTANT:"], max_regions=1)
    # An LLM tokenizer knows nothing of <image>/<regionI>/[SEG]: rebuild one without them.
    backend = plain.backend_tokenizer
    tokenizer = wrap_backend(backend, 1)
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        )
    )
    dirs = {"dinov2": root / "dinov2", "convnext": root / "convnext", "llm": root / "llm"}
    dinov2.save_pretrained(dirs["dinov2"])
    convnext.save_pretrained(dirs["convnext"])
    llama.save_pretrained(dirs["llm"])
    tokenizer.save_pretrained(dirs["llm"])
    return {"dirs": dirs, "dinov2": dinov2, "convnext": convnext, "llama": llama}


def test_position_embeddings_are_resampled() -> None:
    table = torch.randn(1, 1 + 4 * 4, 6)
    out = resample_position_embeddings(table, 8)
    assert out.shape == (1, 1 + 64, 6)
    assert torch.equal(out[:, 0], table[:, 0])
    assert resample_position_embeddings(table, 4) is table
    with pytest.raises(ValueError, match="square"):
        resample_position_embeddings(torch.randn(1, 1 + 12, 6), 4)


def test_parts_load_from_local_folders(pretrained_dirs: dict[str, Any], tmp_path: Path) -> None:
    dirs = pretrained_dirs["dirs"]
    overrides = {
        "vision_config": {"image_size": 128},
        "prompt_config": {
            "mask_size": 128,
            "patch_size": 16,
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "tokens_per_prompt": 2,
        },
        "fusion_config": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2},
        "mask_decoder_hidden_size": 16,
    }
    model, processor = build_from_pretrained_parts(
        dirs["dinov2"], dirs["convnext"], dirs["llm"], dtype=torch.float32, overrides=overrides
    )
    llama = pretrained_dirs["llama"]
    # the LLM's weights are the pretrained ones; embeddings grew by the special tokens
    original = llama.get_input_embeddings().weight
    grown = model.get_input_embeddings().weight
    assert grown.shape[0] == len(processor.tokenizer) > original.shape[0]
    torch.testing.assert_close(grown[: original.shape[0]], original)
    torch.testing.assert_close(
        model.language_model.model.layers[0].mlp.up_proj.weight, llama.model.layers[0].mlp.up_proj.weight
    )
    convnext = pretrained_dirs["convnext"]
    torch.testing.assert_close(
        model.vision_tower.convnext.encoder.stages[2].layers[0].dwconv.weight,
        convnext.encoder.stages[2].layers[0].dwconv.weight,
    )
    dinov2 = pretrained_dirs["dinov2"]
    torch.testing.assert_close(
        model.vision_tower.dinov2.encoder.layer[0].attention.q_proj.weight,
        dinov2.encoder.layer[0].attention.q_proj.weight,
    )
    assert model.vision_tower.dinov2.embeddings.position_embeddings.shape == (1, 1 + 16 * 16, 32)
    # new parts are initialised, not left empty
    assert torch.isfinite(model.fusion.image_in.weight).all() and model.fusion.image_in.weight.std() > 0
    assert model.config.image_token_id == processor.image_token_id
    # and the whole thing runs
    sample = processor.encode(
        torch.randint(0, 255, (3, 128, 128), dtype=torch.uint8).numpy(),
        "optical",
        ["red", "green", "blue"],
        [{"from": "human", "value": "<image>\nWhat is <region1>?"}, {"from": "gpt", "value": "a ship"}],
        [{"type": "box", "box": [10, 10, 60, 60]}],
        train=True,
    )
    batch = processor.collate([sample])
    with torch.no_grad():
        out = model(**batch)
    assert torch.isfinite(out.loss)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
