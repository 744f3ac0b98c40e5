from __future__ import annotations

import pytest
import torch

from earthgptx.model import CHECKPOINT_FORMAT_VERSION, EarthGPTXConfig, EarthGPTXForConditionalGeneration


def test_tiny_sizes() -> None:
    config = EarthGPTXConfig.tiny()
    assert config.image_size == 128
    assert config.vision_config.grid_size == 16
    assert config.num_image_tokens == 64  # 16x16 grid merged 2x2
    assert config.tokens_per_prompt == 4
    assert config.max_prompts >= 8
    assert config.vision_config.feature_size == 32 + 64 + 128 + 192 + 128


def test_tiny_is_a_few_million_parameters(model: EarthGPTXForConditionalGeneration) -> None:
    count = sum(p.numel() for p in model.parameters())
    assert 1e6 < count < 15e6


def test_paper_builds_on_meta_device() -> None:
    config = EarthGPTXConfig.paper()
    assert config.image_size == 448
    assert config.vision_config.grid_size == 32
    assert config.num_image_tokens == 1024
    with torch.device("meta"):
        model = EarthGPTXForConditionalGeneration(config)
    total = sum(p.numel() for p in model.parameters())
    llm = sum(p.numel() for p in model.language_model.parameters())
    dino = sum(p.numel() for p in model.vision_tower.dinov2.parameters())
    convnext = sum(p.numel() for p in model.vision_tower.convnext.parameters())
    assert 6.5e9 < llm < 7.0e9  # Llama-2-7B shape
    assert 0.29e9 < dino < 0.32e9  # DINOv2-L/14
    assert 0.19e9 < convnext < 0.21e9  # ConvNeXt-L
    assert total > llm + dino + convnext


def test_config_round_trip(tmp_path: object, config: EarthGPTXConfig) -> None:
    config.save_pretrained(tmp_path)
    loaded = EarthGPTXConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.checkpoint_format_version == CHECKPOINT_FORMAT_VERSION
    assert loaded.vision_config.dinov2_config.patch_size == 8


def test_overrides_merge_into_sub_configs() -> None:
    config = EarthGPTXConfig.tiny(projector_downsample=1, text_config={"num_hidden_layers": 1})
    assert config.num_image_tokens == 256
    assert config.text_config.num_hidden_layers == 1
    assert config.text_config.hidden_size == 256  # the rest of the preset is kept


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"projector_downsample": 3}, "projector_downsample"),
        ({"prompt_config": {"max_prompts": 4}}, "max_prompts"),
        ({"prompt_config": {"patch_size": 24}}, "patch_size"),
        ({"vision_config": {"image_size": 120}}, "image_size"),
        ({"vision_config": {"num_views": 3}}, "num_views"),
        ({"fusion_config": {"hidden_size": 130}}, "hidden_size"),
        ({"image_token_id": 5}, "distinct"),
        ({"seg_token_id": 99999}, "seg_token_id"),
        ({"region_token_ids": [6, 7]}, "region_token_ids"),
        ({"checkpoint_format_version": 99}, "checkpoint_format_version"),
    ],
)
def test_bad_values_raise_value_error_naming_them(overrides: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        EarthGPTXConfig.tiny(**overrides)


def test_five_views_need_a_double_size_chip() -> None:
    config = EarthGPTXConfig.tiny(
        vision_config={"num_views": 5}, prompt_config={"mask_size": 256, "patch_size": 32}
    )
    assert config.image_size == 256
    assert config.num_image_tokens == 5 * 64
    with pytest.raises(ValueError, match="mask_size"):
        EarthGPTXConfig.tiny(vision_config={"num_views": 5})
