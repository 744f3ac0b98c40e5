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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.features
import torch
import torch.nn.functional as F
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
    ProcessedImage,
    band_slots,
    brightness_temperature_kelvin,
    modality_id,
    normalize_bands,
)
from earthgptx.model.tokenization_earthgptx import detokenize
from earthgptx.radiometry import BandMeta
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
    ``prompt_masks`` ``(n, S, S)``; ``target_masks`` ``(m, S, S)`` for the m ``[SEG]`` ids in ``input_ids``;
    ``nodata_fraction`` and ``warnings``: the image processor's (``ProcessedImage``), to record with the answer.
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
    nodata_fraction: float = 0.0
    warnings: tuple[str, ...] = ()


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


# --------------------------------------------------------------------------------------------------- batching
IGNORE_INDEX = -100


@dataclass
class SampleBanks:
    """Encoded samples as a few tensors, the form both collate paths batch from (:func:`collate_banks`).

    ``images (n_images, 13, S, S)`` (any float dtype) addressed by ``image_index``; per sample ``modality_ids``,
    ``input_ids``/``labels`` ``(n, L)`` (left-aligned, ``lengths`` long), prompt masks in ``prompt_bank
    (1 + P, S, S)`` (row 0 is an empty mask for padded prompt slots) at ``prompt_offsets``/``prompt_counts``, target
    masks likewise in ``target_bank``. ``lengths``, ``prompt_counts``, ``target_counts`` and ``target_offsets`` are
    also kept on the CPU (``*_cpu``), so a batch sizes itself without a device→host sync.
    """

    images: torch.Tensor
    image_index: torch.Tensor
    modality_ids: torch.Tensor
    input_ids: torch.Tensor
    labels: torch.Tensor
    lengths: torch.Tensor
    prompt_bank: torch.Tensor
    prompt_offsets: torch.Tensor
    prompt_counts: torch.Tensor
    target_bank: torch.Tensor
    target_offsets: torch.Tensor
    target_counts: torch.Tensor

    def __post_init__(self) -> None:
        self.lengths_cpu = self.lengths.cpu()
        self.prompt_counts_cpu = self.prompt_counts.cpu()
        self.target_counts_cpu = self.target_counts.cpu()
        self.target_offsets_cpu = self.target_offsets.cpu()

    @classmethod
    def from_samples(cls, samples: Sequence[EncodedSample], size: int) -> SampleBanks:
        """The banks of ``samples`` as they are (float32 pixels and masks, one image per sample)."""
        n = len(samples)
        lengths = torch.tensor([len(s.input_ids) for s in samples], dtype=torch.long)
        length = int(lengths.max()) if n else 0
        input_ids = torch.zeros((n, length), dtype=torch.long)
        labels = torch.full((n, length), IGNORE_INDEX, dtype=torch.long)
        for i, sample in enumerate(samples):
            input_ids[i, : len(sample.input_ids)] = torch.tensor(sample.input_ids, dtype=torch.long)
            labels[i, : len(sample.labels)] = torch.tensor(sample.labels, dtype=torch.long)
        prompt_counts = torch.tensor([s.prompt_masks.shape[0] for s in samples], dtype=torch.long)
        target_counts = torch.tensor([s.target_masks.shape[0] for s in samples], dtype=torch.long)
        empty = torch.zeros(1, size, size)
        return cls(
            images=torch.stack([s.pixel_values for s in samples]),
            image_index=torch.arange(n),
            modality_ids=torch.tensor([s.modality_id for s in samples], dtype=torch.long),
            input_ids=input_ids,
            labels=labels,
            lengths=lengths,
            prompt_bank=torch.cat([empty] + [s.prompt_masks.float() for s in samples]),
            prompt_offsets=1 + torch.cumsum(prompt_counts, 0) - prompt_counts,
            prompt_counts=prompt_counts,
            target_bank=torch.cat([empty[:0]] + [s.target_masks.float() for s in samples]),
            target_offsets=torch.cumsum(target_counts, 0) - target_counts,
            target_counts=target_counts,
        )


def collate_banks(
    banks: SampleBanks, indices: torch.Tensor, pad_token_id: int = 0, train: bool = True
) -> dict[str, torch.Tensor]:
    """The batch of samples ``indices`` of ``banks``, on the banks' device: ``input_ids``, ``attention_mask``,
    ``pixel_values`` (float32), ``modality_ids``, ``prompt_masks`` (float32, as many slots as the batch's largest
    prompt count, at least 1) and ``prompt_valid``; for training (right-padded) also ``labels`` and
    ``target_masks`` (every target mask of the batch, in sample order); for inference left-padded.

    The one collate implementation: ``EarthGPTXProcessor.collate`` calls it on banks packed from its samples,
    training on the pre-encoded dataset's banks (float16 images, uint8 masks) already on the device.
    """
    cpu_index = indices.cpu().long()
    device = banks.images.device
    index = cpu_index.to(device)
    batch = index.shape[0]
    length = int(banks.lengths_cpu[cpu_index].max())
    lengths = banks.lengths[index]
    positions = torch.arange(length, device=device)
    if train:
        attention_mask = (positions[None, :] < lengths[:, None]).long()
        input_ids = banks.input_ids[index, :length].long()
        labels = banks.labels[index, :length].long()
    else:
        start = length - lengths
        attention_mask = (positions[None, :] >= start[:, None]).long()
        source = (positions[None, :] - start[:, None]).clamp(min=0)
        input_ids = torch.gather(banks.input_ids[index, :length].long(), 1, source)
        labels = torch.gather(banks.labels[index, :length].long(), 1, source)
    input_ids = input_ids.masked_fill(attention_mask == 0, pad_token_id)
    labels = labels.masked_fill(attention_mask == 0, IGNORE_INDEX)

    counts = banks.prompt_counts[index]
    slots = max(1, int(banks.prompt_counts_cpu[cpu_index].max()))
    slot = torch.arange(slots, device=device)
    prompt_valid = slot[None, :] < counts[:, None]
    bank_rows = torch.where(prompt_valid, banks.prompt_offsets[index, None] + slot[None, :], 0)
    out = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "pixel_values": banks.images[banks.image_index[index]].float(),
        "modality_ids": banks.modality_ids[index],
        "prompt_masks": banks.prompt_bank[bank_rows].float(),
        "prompt_valid": prompt_valid,
    }
    if not train:
        return out
    target_counts = banks.target_counts_cpu[cpu_index]
    total = int(target_counts.sum())
    if total:
        owner = torch.repeat_interleave(torch.arange(batch), target_counts)
        first = torch.cumsum(target_counts, 0) - target_counts
        within = torch.arange(total) - first[owner]
        rows = (banks.target_offsets_cpu[cpu_index][owner] + within).to(device)
        target_masks = banks.target_bank[rows].float()
    else:
        size = banks.images.shape[-1]
        target_masks = torch.zeros(0, size, size, device=device)
    out["labels"] = labels
    out["target_masks"] = target_masks
    return out


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
        processor's work; :meth:`process_image` also takes band metadata and reports no-data and warnings)."""
        return self.image_processor(array, modality, bands, sar_scale)

    def process_image(
        self,
        array: np.ndarray,
        modality: str,
        bands: Sequence[str],
        sar_scale: str = "amplitude",
        *,
        band_metas: Sequence[BandMeta] | None = None,
        nodata: Sequence[float | None] | float | None = None,
        product_level: str | None = None,
        sensor: str | None = None,
    ) -> ProcessedImage:
        """The image processor's ``process``: checks, radiometric conversion, no-data masking, normalisation and
        resize, with the chip's no-data share and unit warnings."""
        return self.image_processor.process(
            array,
            modality,
            bands,
            sar_scale,
            band_metas=band_metas,
            nodata=nodata,
            product_level=product_level,
            sensor=sensor,
        )

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
        *,
        band_metas: Sequence[BandMeta] | None = None,
        nodata: Sequence[float | None] | float | None = None,
        product_level: str | None = None,
        sensor: str | None = None,
    ) -> EncodedSample:
        """One sample from in-memory arrays (``image`` ``(C, H, W)``, prompts in its pixels). ``band_metas`` (and
        ``product_level``, ``sensor``) describe a real product's bands for the radiometric conversion; ``nodata``
        marks no-data pixels of a chip without metadata (``EarthGPTXImageProcessor.process``)."""
        if image.ndim == 2:
            image = image[None]
        height, width = float(image.shape[-2]), float(image.shape[-1])
        processed = self.process_image(
            image,
            modality,
            bands,
            sar_scale,
            band_metas=band_metas,
            nodata=nodata,
            product_level=product_level,
            sensor=sensor,
        )
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
            pixel_values=processed.pixel_values,
            modality_id=modality_id(modality),
            prompt_masks=masks,
            target_masks=targets,
            width=width,
            height=height,
            sample_id=sample_id,
            nodata_fraction=processed.nodata_fraction,
            warnings=processed.warnings,
        )

    def _resize_mask(self, mask: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy((np.asarray(mask) > 0).astype(np.float32))
        if tensor.shape != (self.image_size, self.image_size):
            tensor = F.interpolate(
                tensor[None, None], size=(self.image_size, self.image_size), mode="nearest"
            )[0, 0]
        return tensor

    def encode_loaded_record(
        self,
        record: dict[str, Any],
        image: np.ndarray,
        target_masks: list[np.ndarray],
        train: bool = True,
    ) -> EncodedSample:
        """One dataset record (JSON Lines format of the design) → ``EncodedSample``, from its image ``(bands, H, W)``
        and target masks already read: the processor reads no files (``earthgptx.training.datasets.encode_record``
        reads a record's GeoTIFFs and calls this; callers that encode many records of one image read it once)."""
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
        (at least 1) with ``prompt_valid=False``. The samples are packed into :class:`SampleBanks` and batched by
        :func:`collate_banks`, the one implementation that training's pre-encoded data (``EncodedDataset.batch``)
        uses too.
        """
        if not samples:
            raise ValueError("cannot collate an empty list of samples")
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        banks = SampleBanks.from_samples(samples, self.image_size)
        return collate_banks(banks, torch.arange(len(samples)), pad, train=train)

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
    "IGNORE_INDEX",
    "ProcessedImage",
    "ParsedAnswer",
    "SampleBanks",
    "collate_banks",
    "band_slots",
    "modality_id",
    "INFRARED_ABSOLUTE_SLOT",
    "brightness_temperature_kelvin",
    "normalize_bands",
    "parse_answer",
    "prompt_to_grid",
    "rasterize_prompt",
]
