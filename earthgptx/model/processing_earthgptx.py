"""Turning raw chips, visual prompts and conversations into model inputs, and model outputs back into answers.

- **Bands**: ``EarthGPTXImageProcessor`` (``image_processing_earthgptx.py``), the per-modality band preprocessing
  into 13 normalised band slots; the processor holds one as ``image_processor``.
- **Prompts** (point, box, polygon, scribble; chip pixels) are validated, normalised to the integer ``[0, 1000)``
  grid (docs/architecture.md) and rasterised with rasterio into one mask per prompt at the model's chip size.
- **Text**: a chat template (``USER: … ASSISTANT: …``), ``<image>`` expanded to the image tokens and
  ``<regionI>`` in human turns to the K tokens of prompt I (in answers ``<regionI>`` stays one ordinary token),
  followed by the prompt's centroid ``[x, y]`` on the grid when ``prompt_coordinates`` is on, labels ``-100``
  everywhere but the assistant's answers.
- **Parsing**: answer text, labels, boxes ``[x1, y1, x2, y2]`` (grid and pixels) and ``[SEG]`` masks.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.errors
import rasterio.features
import torch
import torch.nn.functional as F
from rasterio.enums import Resampling
from rasterio.transform import Affine
from shapely.geometry import LineString, Point
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from earthgptx.formats import (
    BOX_TEXT_PATTERN,
    IMAGE_TOKEN,
    PROMPT_FIELDS,
    SEG_TOKEN,
    box_from_grid,
    box_to_grid,
    boxes_in_text,
    region_indices,
    region_token,
    to_grid,
)
from earthgptx.model.configuration_earthgptx import EarthGPTXConfig
from earthgptx.model.image_processing_earthgptx import (
    BAND_COUNTS,
    BAND_SLOTS,
    INFRARED_ABSOLUTE_SLOT,
    EarthGPTXImageProcessor,
    band_slots,
    brightness_temperature_kelvin,
    modality_id,
    normalize_bands,
)
from earthgptx.model.tokenization_earthgptx import detokenize
from earthgptx.visual_prompts import dict_to_geometry

logger = logging.getLogger(__name__)

PROCESSOR_CONFIG_NAME = "processor_config.json"


# --------------------------------------------------------------------------------------------------- prompts
def prompt_to_grid(prompt: dict[str, Any], width: float, height: float, index: int = 0) -> dict[str, Any]:
    """The prompt in the integer ``[0, 1000)`` grid (docs/architecture.md; validated first)."""
    dict_to_geometry(prompt, width, height, index)
    kind = prompt["type"]
    if kind == "point":
        x, y = np.asarray(prompt["point"], dtype=float).reshape(2)
        return {"type": "point", "point": [to_grid(x, width), to_grid(y, height)]}
    if kind == "box":
        x1, y1, x2, y2 = np.asarray(prompt["box"], dtype=float).reshape(4)
        return {"type": "box", "box": box_to_grid((x1, y1, x2, y2), width, height)}
    key = PROMPT_FIELDS[kind]
    points = [[to_grid(x, width), to_grid(y, height)] for x, y in np.asarray(prompt[key], dtype=float)]
    return {"type": kind, key: points}


def prompt_centroid_grid(
    prompt: dict[str, Any], width: float, height: float, index: int = 0
) -> tuple[int, int]:
    """The centroid of a prompt's geometry (validated; chip pixels in) on the integer ``[0, 1000)`` grid: the
    point itself, a box's centre, a polygon's area centroid, a scribble's length-weighted centroid."""
    centre = dict_to_geometry(prompt, width, height, index).centroid
    return to_grid(centre.x, width), to_grid(centre.y, height)


def rasterize_prompt(
    prompt: dict[str, Any],
    width: float,
    height: float,
    size: int,
    point_radius: float = 2.0,
    line_width: float = 2.0,
    index: int = 0,
) -> np.ndarray:
    """One prompt (chip pixels of a ``width × height`` chip) → a ``(size, size)`` float32 mask in {0, 1}.

    Points become discs of ``point_radius`` and scribbles lines of ``line_width`` (both in mask pixels);
    boxes and polygons are filled. Thin shapes use all-touched rasterisation so they never vanish.
    """
    geometry = dict_to_geometry(prompt, width, height, index)
    scale_x, scale_y = width / size, height / size
    if isinstance(geometry, Point):
        geometry = geometry.buffer(point_radius * max(scale_x, scale_y))
    elif isinstance(geometry, LineString):
        geometry = geometry.buffer(line_width / 2 * max(scale_x, scale_y), cap_style="round")
    transform = Affine.scale(scale_x, scale_y)
    mask = rasterio.features.rasterize(
        [(geometry, 1)], out_shape=(size, size), transform=transform, fill=0, all_touched=True, dtype="uint8"
    )
    if not mask.any():
        raise ValueError(f"prompt {index + 1} ({prompt['type']}) rasterises to an empty mask at {size} px")
    return mask.astype(np.float32)


# --------------------------------------------------------------------------------------------------- samples
@dataclass
class EncodedSample:
    """One request or training sample, ready to collate.

    ``input_ids``/``labels``: lists of ids (placeholders expanded); ``pixel_values`` ``(13, S, S)``;
    ``prompt_masks`` ``(n, S, S)``; ``target_masks`` ``(m, S, S)`` for the m ``[SEG]`` ids in ``input_ids``.
    """

    input_ids: list[int]
    labels: list[int]
    pixel_values: torch.Tensor
    modality_id: int
    prompt_masks: torch.Tensor
    target_masks: torch.Tensor
    width: float
    height: float
    sample_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ParsedAnswer:
    """An answer taken apart: ``text`` (clean), ``label`` (text without boxes/[SEG]), ``boxes`` in the
    ``[0, 1000)`` grid, ``boxes_px`` in chip pixels (when the chip size is known), ``masks`` ``(S, S)`` bool
    arrays at model resolution, one per ``[SEG]``."""

    text: str
    label: str
    boxes: list[list[int]]
    boxes_px: list[list[float]]
    has_seg: bool
    masks: list[np.ndarray] = field(default_factory=list)


def parse_answer(text: str, width: float | None = None, height: float | None = None) -> ParsedAnswer:
    """Take boxes ``[x1, y1, x2, y2]`` (grid integers) and ``[SEG]`` out of an answer; the rest is the label."""
    boxes = boxes_in_text(text)
    has_seg = SEG_TOKEN in text
    label = BOX_TEXT_PATTERN.sub(" ", text).replace(SEG_TOKEN, " ")
    label = re.sub(r"\s+", " ", label).strip(" .,;:")
    boxes_px = [box_from_grid(b, width, height) for b in boxes] if width and height else []
    return ParsedAnswer(text=text.strip(), label=label, boxes=boxes, boxes_px=boxes_px, has_seg=has_seg)


# --------------------------------------------------------------------------------------------------- processor
class EarthGPTXProcessor:
    """Preprocessing, tokenisation, batching and output parsing for ``EarthGPTXForConditionalGeneration``.

    Build it from a tokenizer and the model config (``EarthGPTXProcessor(tokenizer, config)``); save and load it
    next to the model with ``save_pretrained`` / ``from_pretrained``.
    """

    user_prefix = "USER:"
    assistant_prefix = "ASSISTANT:"

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        config: EarthGPTXConfig | None = None,
        *,
        image_size: int | None = None,
        num_image_tokens: int | None = None,
        tokens_per_prompt: int | None = None,
        max_prompts: int | None = None,
        max_length: int | None = None,
        point_radius: float = 2.0,
        line_width: float = 2.0,
        prompt_coordinates: bool | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.image_size = int(image_size or (config.image_size if config else 128))
        self.num_image_tokens = int(num_image_tokens or (config.num_image_tokens if config else 64))
        self.tokens_per_prompt = int(tokens_per_prompt or (config.tokens_per_prompt if config else 4))
        self.max_prompts = int(max_prompts or (config.max_prompts if config else 8))
        self.max_length = int(
            max_length
            or (config.text_config.max_position_embeddings if config else tokenizer.model_max_length)
        )
        self.image_processor = EarthGPTXImageProcessor(self.image_size)
        self.point_radius = float(point_radius)
        self.line_width = float(line_width)
        if prompt_coordinates is None:
            prompt_coordinates = bool(getattr(config, "prompt_coordinates", False)) if config else False
        self.prompt_coordinates = bool(prompt_coordinates)
        self.image_token_id = self._token_id(IMAGE_TOKEN)
        self.seg_token_id = self._token_id(SEG_TOKEN)
        self.region_token_ids = [self._token_id(region_token(i + 1)) for i in range(self.max_prompts)]
        if config is not None:
            mismatched = {
                name: (getattr(config, name), ours)
                for name, ours in (
                    ("image_token_id", self.image_token_id),
                    ("seg_token_id", self.seg_token_id),
                    ("region_token_ids", self.region_token_ids),
                )
                if getattr(config, name) != ours
            }
            if mismatched:
                raise ValueError(
                    f"tokenizer and config disagree on special token ids (config, tokenizer): {mismatched}"
                )
            if len(tokenizer) > config.text_config.vocab_size:
                raise ValueError(
                    f"tokenizer has {len(tokenizer)} tokens but the language model only "
                    f"{config.text_config.vocab_size} embeddings"
                )
        self._word_level = (
            type(getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None)).__name__
            == "WordLevel"
        )

    def _token_id(self, token: str) -> int:
        value = self.tokenizer.convert_tokens_to_ids(token)
        if not isinstance(value, int) or value == self.tokenizer.unk_token_id:
            raise ValueError(f"tokenizer has no special token {token!r}")
        return value

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        return {
            "processor_class": type(self).__name__,
            "image_size": self.image_size,
            "num_image_tokens": self.num_image_tokens,
            "tokens_per_prompt": self.tokens_per_prompt,
            "max_prompts": self.max_prompts,
            "max_length": self.max_length,
            "point_radius": self.point_radius,
            "line_width": self.line_width,
            "prompt_coordinates": self.prompt_coordinates,
        }

    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``processor_config.json`` and the tokenizer files into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(directory)
        (directory / PROCESSOR_CONFIG_NAME).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> EarthGPTXProcessor:
        """Load a processor saved by ``save_pretrained`` (a local directory; nothing is downloaded)."""
        directory = Path(directory)
        settings = json.loads((directory / PROCESSOR_CONFIG_NAME).read_text())
        settings.pop("processor_class", None)
        tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        return cls(tokenizer, **settings)

    # ------------------------------------------------------------------ images
    def preprocess_image(
        self, array: np.ndarray, modality: str, bands: Sequence[str], sar_scale: str = "amplitude"
    ) -> torch.Tensor:
        """Raw ``(C, H, W)`` bands → ``(13, S, S)`` normalised float32 tensor at the model's chip size (the image
        processor's work)."""
        return self.image_processor(array, modality, bands, sar_scale)

    def prompt_masks(self, prompts: Sequence[dict[str, Any]], width: float, height: float) -> torch.Tensor:
        """Prompts in chip pixels → ``(n, S, S)`` masks (validated; at most ``max_prompts``)."""
        if len(prompts) > self.max_prompts:
            raise ValueError(
                f"{len(prompts)} visual prompts given but the model supports at most {self.max_prompts}"
            )
        masks = [
            rasterize_prompt(p, width, height, self.image_size, self.point_radius, self.line_width, index=i)
            for i, p in enumerate(prompts)
        ]
        if not masks:
            return torch.zeros(0, self.image_size, self.image_size)
        return torch.from_numpy(np.stack(masks))

    # ------------------------------------------------------------------ text
    def _check_regions(self, texts: Iterable[str], num_prompts: int) -> None:
        for text in texts:
            for index in region_indices(text):
                if index > self.max_prompts:
                    raise ValueError(
                        f"text refers to <region{index}> but the model supports at most {self.max_prompts} prompts"
                    )
                if index > num_prompts or index < 1:
                    raise ValueError(
                        f"text refers to <region{index}> but only {num_prompts} visual prompt(s) were given"
                    )

    def _encode_text(
        self,
        text: str,
        expand_regions: bool = True,
        prompt_points: Sequence[tuple[int, int]] | None = None,
    ) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        expanded: list[int] = []
        region_ids = set(self.region_token_ids) if expand_regions else set()
        for token in ids:
            if token == self.image_token_id:
                expanded.extend([token] * self.num_image_tokens)
            elif token in region_ids:
                expanded.extend([token] * self.tokens_per_prompt)
                if prompt_points is not None:
                    x, y = prompt_points[self.region_token_ids.index(token)]
                    expanded.extend(self.tokenizer(f"[{x}, {y}]", add_special_tokens=False)["input_ids"])
            else:
                expanded.append(token)
        return expanded

    def build_conversation(
        self,
        conversations: Sequence[dict[str, str]],
        num_prompts: int,
        train: bool,
        prompt_points: Sequence[tuple[int, int]] | None = None,
    ) -> tuple[list[int], list[int]]:
        """Apply the chat template; returns ``(input_ids, labels)``.

        Training: every ``gpt`` turn is an answer (labelled, followed by ``</s>``). Inference: the turns up to
        the last ``human`` turn, ending with ``ASSISTANT:`` for the model to continue. With
        ``prompt_coordinates`` on, ``prompt_points`` (one grid centroid per prompt, :func:`prompt_centroid_grid`)
        is required, and each ``<regionI>`` of a human turn becomes its K tokens followed by ``[x, y]``.
        """
        if self.prompt_coordinates:
            if prompt_points is None or len(prompt_points) != num_prompts:
                given = "none" if prompt_points is None else str(len(prompt_points))
                raise ValueError(
                    f"this processor writes each prompt's centroid after its tokens (prompt_coordinates) and "
                    f"needs one per prompt: {num_prompts} prompt(s), {given} centroid(s) given"
                )
        else:
            prompt_points = None
        turns = list(conversations)
        if not turns or turns[0].get("from") != "human":
            raise ValueError("a conversation must start with a 'human' turn")
        for turn in turns:
            if turn.get("from") not in ("human", "gpt") or not isinstance(turn.get("value"), str):
                raise ValueError(
                    f"bad conversation turn {turn!r}: needs 'from' human|gpt and a string 'value'"
                )
        if not train:
            while turns and turns[-1]["from"] == "gpt":
                turns.pop()
        image_mentions = sum(t["value"].count(IMAGE_TOKEN) for t in turns)
        if image_mentions > 1:
            raise ValueError(
                f"the conversation mentions {IMAGE_TOKEN} {image_mentions} times; one image per sample"
            )
        if image_mentions == 0:
            turns[0] = {"from": "human", "value": f"{IMAGE_TOKEN}\n{turns[0]['value']}"}
        self._check_regions((t["value"] for t in turns), num_prompts)
        if any(IMAGE_TOKEN in t["value"] for t in turns if t["from"] == "gpt"):
            raise ValueError(f"{IMAGE_TOKEN} may only appear in human turns")
        if SEG_TOKEN in "".join(t["value"] for t in turns if t["from"] == "human"):
            raise ValueError(f"{SEG_TOKEN} may only appear in answers")

        bos = self.tokenizer.bos_token_id
        eos = self.tokenizer.eos_token_id
        input_ids: list[int] = [bos] if bos is not None else []
        labels: list[int] = [-100] * len(input_ids)
        for turn in turns:
            if turn["from"] == "human":
                ids = self._encode_text(
                    f"{self.user_prefix} {turn['value']} {self.assistant_prefix}", prompt_points=prompt_points
                )
                input_ids += ids
                labels += [-100] * len(ids)
            else:
                # An answer that names a region says it with one ``<regionI>`` token (what the model can emit),
                # not with the prompt's K placeholders.
                ids = self._encode_text(turn["value"].strip(), expand_regions=False)
                ids += [eos] if eos is not None else []
                input_ids += ids
                labels += ids
        if train and not any(t["from"] == "gpt" for t in turns):
            raise ValueError("a training conversation needs at least one 'gpt' answer")
        if len(input_ids) > self.max_length:
            raise ValueError(
                f"the sample is {len(input_ids)} tokens long; the model takes at most {self.max_length}"
            )
        return input_ids, labels

    # ------------------------------------------------------------------ records
    def encode(
        self,
        image: np.ndarray,
        modality: str,
        bands: Sequence[str],
        conversations: Sequence[dict[str, str]],
        prompts: Sequence[dict[str, Any]] = (),
        train: bool = False,
        sar_scale: str = "amplitude",
        target_masks: Sequence[np.ndarray] = (),
        sample_id: str = "",
    ) -> EncodedSample:
        """One sample from in-memory arrays (``image`` ``(C, H, W)``, prompts in its pixels)."""
        if image.ndim == 2:
            image = image[None]
        height, width = float(image.shape[-2]), float(image.shape[-1])
        pixel_values = self.preprocess_image(image, modality, bands, sar_scale)
        masks = self.prompt_masks(prompts, width, height)
        points = (
            [prompt_centroid_grid(p, width, height, i) for i, p in enumerate(prompts)]
            if self.prompt_coordinates
            else None
        )
        input_ids, labels = self.build_conversation(conversations, len(prompts), train, prompt_points=points)
        seg_count = sum(1 for t in input_ids if t == self.seg_token_id)
        if train and seg_count != len(target_masks):
            raise ValueError(
                f"sample {sample_id or '?'}: the answer has {seg_count} {SEG_TOKEN} but {len(target_masks)} mask(s)"
            )
        targets = torch.zeros(0, self.image_size, self.image_size)
        if train and seg_count:
            targets = torch.stack([self._resize_mask(m) for m in target_masks])
        return EncodedSample(
            input_ids=input_ids,
            labels=labels if train else [-100] * len(input_ids),
            pixel_values=pixel_values,
            modality_id=modality_id(modality),
            prompt_masks=masks,
            target_masks=targets,
            width=width,
            height=height,
            sample_id=sample_id,
        )

    def _resize_mask(self, mask: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy((np.asarray(mask) > 0).astype(np.float32))
        if tensor.shape != (self.image_size, self.image_size):
            tensor = F.interpolate(
                tensor[None, None], size=(self.image_size, self.image_size), mode="nearest"
            )[0, 0]
        return tensor

    def encode_record(self, record: dict[str, Any], root: str | Path, train: bool = True) -> EncodedSample:
        """One dataset record (JSON Lines format of the design) → ``EncodedSample``; ``root`` is the jsonl's folder."""
        root = Path(root)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(root / record["image"]) as src:
                image = src.read()
            masks: list[np.ndarray] = []
            if train and record.get("mask"):
                mask_paths = record["mask"] if isinstance(record["mask"], list) else [record["mask"]]
                for mask_path in mask_paths:
                    with rasterio.open(root / mask_path) as src:
                        masks.append(
                            src.read(
                                1, out_shape=(self.image_size, self.image_size), resampling=Resampling.nearest
                            )
                        )
        return self.encode_loaded_record(record, image, masks, train=train)

    def encode_loaded_record(
        self,
        record: dict[str, Any],
        image: np.ndarray,
        target_masks: list[np.ndarray],
        train: bool = True,
    ) -> EncodedSample:
        """Like :meth:`encode_record`, with the image ``(bands, H, W)`` and target masks already read (callers
        that encode many records of one image read it once)."""
        sample_id = str(record.get("id", ""))
        width = float(record.get("width", int(image.shape[-1])))
        height = float(record.get("height", int(image.shape[-2])))
        if (int(width), int(height)) != (image.shape[-1], image.shape[-2]):
            raise ValueError(
                f"record {sample_id}: width/height {width:g}x{height:g} do not match the image {image.shape[-1]}x{image.shape[-2]}"
            )
        try:
            return self.encode(
                image,
                record["modality"],
                record["bands"],
                record["conversations"],
                record.get("prompts", []),
                train=train,
                sar_scale=record.get("sar_scale", "amplitude"),
                target_masks=target_masks,
                sample_id=sample_id,
            )
        except ValueError as exc:
            raise ValueError(f"record {sample_id}: {exc}") from exc

    # ------------------------------------------------------------------ batching
    def collate(self, samples: Sequence[EncodedSample], train: bool = True) -> dict[str, torch.Tensor]:
        """Pad and stack samples into keyword tensors for ``model(**batch)`` / ``model.generate(**batch)``.

        Training batches are right-padded and carry ``labels`` and ``target_masks``; inference batches are
        left-padded (as ``generate`` needs). Prompt slots are padded to the largest prompt count in the batch
        (at least 1) with ``prompt_valid=False``.
        """
        if not samples:
            raise ValueError("cannot collate an empty list of samples")
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        length = max(len(s.input_ids) for s in samples)
        size = self.image_size
        num_prompts = max(1, max(s.prompt_masks.shape[0] for s in samples))
        batch = len(samples)
        input_ids = torch.full((batch, length), pad, dtype=torch.long)
        labels = torch.full((batch, length), -100, dtype=torch.long)
        attention_mask = torch.zeros((batch, length), dtype=torch.long)
        prompt_masks = torch.zeros((batch, num_prompts, size, size))
        prompt_valid = torch.zeros((batch, num_prompts), dtype=torch.bool)
        for i, sample in enumerate(samples):
            n = len(sample.input_ids)
            span = slice(0, n) if train else slice(length - n, length)
            input_ids[i, span] = torch.tensor(sample.input_ids)
            labels[i, span] = torch.tensor(sample.labels)
            attention_mask[i, span] = 1
            count = sample.prompt_masks.shape[0]
            prompt_masks[i, :count] = sample.prompt_masks
            prompt_valid[i, :count] = True
        out = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "pixel_values": torch.stack([s.pixel_values for s in samples]),
            "modality_ids": torch.tensor([s.modality_id for s in samples], dtype=torch.long),
            "prompt_masks": prompt_masks,
            "prompt_valid": prompt_valid,
        }
        if train:
            out["labels"] = labels
            out["target_masks"] = torch.cat([s.target_masks for s in samples]) if samples else torch.zeros(0)
        return out

    def collate_records(
        self, records: Sequence[dict[str, Any]], root: str | Path, train: bool = True
    ) -> dict[str, torch.Tensor]:
        """Records (+ the jsonl's folder) → a training (``train=True``) or inference batch."""
        return self.collate([self.encode_record(r, root, train) for r in records], train=train)

    # ------------------------------------------------------------------ outputs
    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Generated ids → clean text (stops at ``</s>``; keeps ``[SEG]``)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        eos = self.tokenizer.eos_token_id
        drop = {self.tokenizer.pad_token_id, self.tokenizer.bos_token_id}
        kept: list[int] = []
        for token in ids:
            if token == eos:
                break
            if token not in drop:
                kept.append(int(token))
        text = str(self.tokenizer.decode(kept, skip_special_tokens=False))
        return detokenize(text) if self._word_level else text.strip()

    def post_process_generation(
        self,
        sequences: torch.Tensor,
        mask_logits: torch.Tensor | None = None,
        seg_batch_index: torch.Tensor | None = None,
        sizes: Sequence[tuple[float, float]] | None = None,
        mask_threshold: float = 0.0,
    ) -> list[ParsedAnswer]:
        """``generate`` output → one ``ParsedAnswer`` per sample; ``sizes`` are ``(width, height)`` in chip
        pixels for ``boxes_px``; masks are thresholded logits at model resolution."""
        answers = []
        for i, row in enumerate(sequences):
            width, height = sizes[i] if sizes else (None, None)
            answers.append(parse_answer(self.decode(row), width, height))
        if mask_logits is not None and seg_batch_index is not None:
            for logits, sample in zip(mask_logits, seg_batch_index.tolist(), strict=True):
                answers[sample].masks.append((logits > mask_threshold).cpu().numpy())
        return answers


__all__ = [
    "BAND_COUNTS",
    "BAND_SLOTS",
    "EarthGPTXImageProcessor",
    "EarthGPTXProcessor",
    "EncodedSample",
    "ParsedAnswer",
    "band_slots",
    "modality_id",
    "INFRARED_ABSOLUTE_SLOT",
    "brightness_temperature_kelvin",
    "normalize_bands",
    "parse_answer",
    "prompt_to_grid",
    "rasterize_prompt",
]
