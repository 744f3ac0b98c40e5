"""Training data: generate (or reuse) the synthetic dataset, build the tokenizer, pre-encode once into tensors.

GeoTIFF reading, band normalisation and prompt rasterisation are far slower than a training step of the tiny
model, so every record is encoded exactly once, in parallel, into an :class:`EncodedDataset`: a few large
tensors that can live on the GPU. Each (scene, modality) chip is stored once (``float16``, 13 band slots) and
shared by its ~9 records; prompt and target masks are stored as ``uint8`` banks. A batch is then a gather on
the device (:meth:`EncodedDataset.batch`) by ``collate_banks``, the same function ``EarthGPTXProcessor.collate``
batches with, so it yields exactly the processor's training batch.

Files are read here, not in the processor: :func:`read_image` and :func:`read_target_masks` read a record's
GeoTIFF and masks, :func:`encode_record` / :func:`collate_records` encode and batch records from their files
(the processor works on arrays: ``EarthGPTXProcessor.encode_loaded_record``).

:class:`WeightedStepSampler` draws each step's indices from per-task weights with a generator seeded by the step
number, so a resumed run sees the same batches as an uninterrupted one, and each DDP rank takes its own slice.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import warnings
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.errors
import torch
from rasterio.enums import Resampling
from tqdm import tqdm
from transformers import PreTrainedTokenizerFast

from earthgptx.data import generate_dataset, load_records
from earthgptx.data.generate import PLAIN, SceneOptions
from earthgptx.data.vocabulary import DATASET_VERSION, TASKS
from earthgptx.model import EarthGPTXProcessor, build_tokenizer
from earthgptx.model.processing_earthgptx import IGNORE_INDEX, EncodedSample, SampleBanks, collate_banks
from earthgptx.training.auxiliary import (
    ChipTargets,
    chip_targets,
    region_targets,
    stack_region_targets,
    synthetic_scene,
)
from earthgptx.training.recipe import DataSettings

logger = logging.getLogger(__name__)


def cpu_workers(requested: int) -> int:
    """``requested`` processes, or every core this process may use when it is 0."""
    if requested > 0:
        return requested
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def ensure_dataset(
    out_dir: str | Path,
    n_scenes: int,
    seed: int,
    chip_size: int = 128,
    records_per_task: int = 1,
    workers: int = 1,
    progress: bool = True,
    options: SceneOptions = PLAIN,
) -> Path:
    """``records.jsonl`` of the dataset with these settings: reused when ``out_dir`` already holds it, else
    generated (the generator is deterministic, so reuse is exact)."""
    out = Path(out_dir)
    records = out / "records.jsonl"
    meta_path = out / "dataset.json"
    if records.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        wanted = {
            "seed": seed,
            "n_scenes": n_scenes,
            "chip_size": chip_size,
            "records_per_task": records_per_task,
            "version": DATASET_VERSION,
        }
        if (
            all(meta.get(k) == v for k, v in wanted.items())
            and dataset_options(meta) == options  # a dataset written before an option existed had it off
            and len(meta.get("tasks", [])) == len(TASKS)
        ):
            logger.info("reusing the dataset in %s (seed %d, %d scenes)", out, seed, n_scenes)
            return records
        logger.info("dataset in %s has other settings; regenerating", out)
    logger.info("generating %d scenes (seed %d) into %s with %d process(es)", n_scenes, seed, out, workers)
    return generate_dataset(
        out,
        n_scenes,
        seed,
        chip_size=chip_size,
        progress=progress,
        records_per_task=records_per_task,
        workers=workers,
        options=options,
    )


def scene_options(data: DataSettings) -> SceneOptions:
    """The generator options a recipe's training data is drawn with."""
    return SceneOptions(data.negatives, data.randomise, data.effects, data.areas, data.textures)


def dataset_options(meta: Mapping[str, Any]) -> SceneOptions:
    """The generator options a dataset was written with (its ``dataset.json``; both off when not named)."""
    return SceneOptions(
        bool(meta.get("negatives", False)),
        float(meta.get("randomise", 0.0)),
        bool(meta.get("effects", False)),
        bool(meta.get("areas", False)),
        bool(meta.get("textures", False)),
    )


def ensure_eval_dataset(data: DataSettings, workers: int = 1, progress: bool = True) -> Path:
    """``records.jsonl`` of the held-out set that ``data`` (a run's ``data`` section) names."""
    return ensure_dataset(
        data.eval_dir,
        data.n_eval_scenes,
        data.eval_seed,
        data.chip_size,
        data.records_per_task,
        workers,
        progress,
    )


def tokenizer_texts(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every turn of every record, plus the chat template's words (the tokenizer's training text)."""
    texts = [str(turn["value"]) for record in records for turn in record["conversations"]]
    texts.append(f"{EarthGPTXProcessor.user_prefix} {EarthGPTXProcessor.assistant_prefix}")
    return texts


def build_run_tokenizer(
    records: Sequence[Mapping[str, Any]], max_regions: int = 8
) -> PreTrainedTokenizerFast:
    """The word-level tokenizer of the training records (deterministic for the same records)."""
    return build_tokenizer(tokenizer_texts(records), max_regions=max_regions, min_frequency=1)


# ------------------------------------------------------------------------------------------- encoding
_WORKER_PROCESSOR: EarthGPTXProcessor | None = None


def _init_worker(processor: EarthGPTXProcessor, threads: int) -> None:
    global _WORKER_PROCESSOR
    _WORKER_PROCESSOR = processor
    torch.set_num_threads(threads)


def read_image(path: str | Path) -> np.ndarray:
    """Every band of a chip GeoTIFF, ``(bands, H, W)`` as stored (a chip need not be georeferenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            return src.read()


def read_target_masks(record: Mapping[str, Any], root: str | Path, size: int) -> list[np.ndarray]:
    """The record's target masks (``mask``: one path or a list, relative to ``root``), each read at ``size × size``
    with nearest-neighbour resampling; none when the record has none."""
    if not record.get("mask"):
        return []
    paths = record["mask"] if isinstance(record["mask"], list) else [record["mask"]]
    return [read_mask(Path(root) / path, size) for path in paths]


def read_mask(path: str | Path, size: int) -> np.ndarray:
    """Band 1 of a mask file at ``size × size`` (nearest-neighbour resampling; masks are plain PNGs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            return src.read(1, out_shape=(size, size), resampling=Resampling.nearest)


def encode_record(
    record: dict[str, Any], root: str | Path, processor: EarthGPTXProcessor, train: bool = True
) -> EncodedSample:
    """One dataset record → ``EncodedSample``: its GeoTIFFs are read here (``root`` is the jsonl's folder; target
    masks only for training) and the arrays go to ``processor.encode_loaded_record``."""
    image = read_image(Path(root) / record["image"])
    masks = read_target_masks(record, root, processor.image_size) if train else []
    return processor.encode_loaded_record(record, image, masks, train=train)


def collate_records(
    records: Sequence[dict[str, Any]], root: str | Path, processor: EarthGPTXProcessor, train: bool = True
) -> dict[str, torch.Tensor]:
    """Records (+ the jsonl's folder) → a training (``train=True``) or inference batch (``processor.collate``)."""
    return processor.collate([encode_record(r, root, processor, train) for r in records], train=train)


@dataclass(frozen=True)
class AuxSpec:
    """Where auxiliary targets come from: the synthetic dataset's ``seed`` and ``chip_size``, and the sides of
    the image-token grid and of the mask decoder's pixel features."""

    seed: int
    chip_size: int
    grid: int
    pixel_side: int
    options: SceneOptions = PLAIN  # the generator's negatives/randomise settings (dataset.json)


@dataclass
class _EncodedChip:
    pixels: np.ndarray  # (13, S, S) float16
    samples: list[dict[str, Any]]
    aux: ChipTargets | None = None


_Job = tuple[str, str, list[dict[str, Any]], bool, AuxSpec | None]


def _encode_chip(job: _Job) -> _EncodedChip:
    """Encode every record of one chip (the image is read once)."""
    root_text, image_name, records, train, aux_spec = job
    scene = None
    if aux_spec is not None and records:
        scene = synthetic_scene(records[0], aux_spec.seed, aux_spec.chip_size, aux_spec.options)
    processor = _WORKER_PROCESSOR
    assert processor is not None, "worker not initialised"
    root = Path(root_text)
    size = processor.image_size
    image = read_image(root / image_name)
    pixels: np.ndarray | None = None
    samples = []
    for record in records:
        masks = read_target_masks(record, root, size) if train else []
        sample: EncodedSample = processor.encode_loaded_record(record, image, masks, train=train)
        if pixels is None:
            pixels = sample.pixel_values.numpy().astype(np.float16)
        samples.append(
            {
                "input_ids": np.asarray(sample.input_ids, dtype=np.int32),
                "labels": np.asarray(sample.labels, dtype=np.int32),
                "modality_id": sample.modality_id,
                "prompt_masks": (sample.prompt_masks.numpy() > 0.5).astype(np.uint8),
                "target_masks": (sample.target_masks.numpy() > 0.5).astype(np.uint8),
                "region": region_targets(record, scene) if scene is not None else None,
            }
        )
    assert pixels is not None
    aux = None
    if scene is not None and aux_spec is not None:
        aux = chip_targets(scene, aux_spec.grid, aux_spec.pixel_side)
    return _EncodedChip(pixels=pixels, samples=samples, aux=aux)


class EncodedDataset:
    """Pre-encoded records as tensors (on CPU or moved to a device with :meth:`to`).

    ``images (n_chips, 13, S, S)`` float16; per sample ``image_index``, ``modality_ids``, right-padded
    ``input_ids``/``labels`` ``(n, L_max)``, ``lengths``; prompt masks in ``prompt_bank (1 + P, S, S)`` uint8 (row 0
    is an empty mask for padded prompt slots) addressed by ``prompt_offsets``/``prompt_counts``; target masks
    likewise in ``target_bank``. ``records`` keeps the source records in sample order.
    """

    def __init__(
        self,
        records: list[dict[str, Any]],
        images: torch.Tensor,
        image_index: torch.Tensor,
        modality_ids: torch.Tensor,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        lengths: torch.Tensor,
        prompt_bank: torch.Tensor,
        prompt_offsets: torch.Tensor,
        prompt_counts: torch.Tensor,
        target_bank: torch.Tensor,
        target_offsets: torch.Tensor,
        target_counts: torch.Tensor,
        aux: dict[str, torch.Tensor] | None = None,
    ) -> None:
        self.records = records
        # Auxiliary targets: per chip (indexed like ``images``) except ``aux_region``, which is per sample.
        self.aux = aux
        self.images = images
        self.image_index = image_index
        self.modality_ids = modality_ids
        self.input_ids = input_ids
        self.labels = labels
        self.lengths = lengths
        self.prompt_bank = prompt_bank
        self.prompt_offsets = prompt_offsets
        self.prompt_counts = prompt_counts
        self.target_bank = target_bank
        self.target_offsets = target_offsets
        self.target_counts = target_counts
        # The batching view (with the small per-sample facts kept on the CPU, so a batch needs no device→host sync
        # to size itself).
        self.banks = SampleBanks(**{name: getattr(self, name) for name in _TENSORS})
        self.tasks = [str(r["task"]) for r in records]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def device(self) -> torch.device:
        return self.images.device

    def nbytes(self) -> int:
        tensors = [getattr(self, name) for name in _TENSORS] + list((self.aux or {}).values())
        return int(sum(t.numel() * t.element_size() for t in tensors))

    def to(self, device: torch.device | str) -> EncodedDataset:
        """A copy with every tensor on ``device``."""
        moved = {name: getattr(self, name).to(device) for name in _TENSORS}
        aux = None if self.aux is None else {k: v.to(device) for k, v in self.aux.items()}
        return EncodedDataset(self.records, **moved, aux=aux)

    def subset(self, indices: Sequence[int]) -> EncodedDataset:
        """The samples at ``indices`` (sharing the image and mask banks)."""
        index = torch.as_tensor(list(indices), dtype=torch.long)
        dev_index = index.to(self.device)
        return EncodedDataset(
            [self.records[i] for i in index.tolist()],
            images=self.images,
            image_index=self.image_index[dev_index],
            modality_ids=self.modality_ids[dev_index],
            input_ids=self.input_ids[dev_index],
            labels=self.labels[dev_index],
            lengths=self.lengths[dev_index],
            prompt_bank=self.prompt_bank,
            prompt_offsets=self.prompt_offsets[dev_index],
            prompt_counts=self.prompt_counts[dev_index],
            target_bank=self.target_bank,
            target_offsets=self.target_offsets[dev_index],
            target_counts=self.target_counts[dev_index],
            aux=None if self.aux is None else {
                k: v[dev_index] if k == "aux_region" else v for k, v in self.aux.items()
            },
        )  # fmt: skip

    def batch(self, indices: torch.Tensor, pad_token_id: int = 0) -> dict[str, torch.Tensor]:
        """The model inputs of samples ``indices`` (right-padded): ``processor.collate(train=True)``'s batching
        (:func:`collate_banks`) on the pre-encoded banks, a gather on their device. Their auxiliary targets come
        apart, from :meth:`aux_targets`."""
        return collate_banks(self.banks, indices, pad_token_id, train=True)

    def aux_targets(self, indices: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """The auxiliary targets of samples ``indices`` (per chip, and ``aux_region`` per prompt slot of the batch,
        as many slots as :meth:`batch` gives), or ``None`` when the data has none."""
        if self.aux is None:
            return None
        cpu_index = indices.cpu().long()
        index = cpu_index.to(self.device)
        slots = max(1, int(self.banks.prompt_counts_cpu[cpu_index].max()))
        chip = self.image_index[index]
        return {
            name: values[index, :slots] if name == "aux_region" else values[chip]
            for name, values in self.aux.items()
        }


_TENSORS = (
    "images",
    "image_index",
    "modality_ids",
    "input_ids",
    "labels",
    "lengths",
    "prompt_bank",
    "prompt_offsets",
    "prompt_counts",
    "target_bank",
    "target_offsets",
    "target_counts",
)


def _chip_jobs(
    records: Sequence[dict[str, Any]], root: str | Path, train: bool, aux: AuxSpec | None
) -> tuple[list[_Job], list[int]]:
    """One job per chip (its records grouped, so each GeoTIFF is read once) and the record order the jobs give."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        groups[str(record["image"])].append(i)
    jobs: list[_Job] = [
        (str(root), name, [records[i] for i in members], train, aux) for name, members in groups.items()
    ]
    return jobs, [i for members in groups.values() for i in members]


def _run_jobs(
    jobs: list[_Job], processor: EarthGPTXProcessor, workers: int, progress: bool, total: int
) -> Iterator[_EncodedChip]:
    """The encoded chips of ``jobs``, in order, from ``workers`` processes (this one when ``workers`` <= 1)."""
    bar = tqdm(total=total, disable=not progress, desc="encoding", unit="rec", mininterval=2.0)
    if workers <= 1:
        _init_worker(processor, torch.get_num_threads())
        for job in jobs:
            chip = _encode_chip(job)
            bar.update(len(chip.samples))
            yield chip
    else:
        context = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        with context.Pool(workers, initializer=_init_worker, initargs=(processor, 1)) as pool:
            for chip in pool.imap(_encode_chip, jobs, chunksize=8):
                bar.update(len(chip.samples))
                yield chip
    bar.close()


def encode_dataset(
    records: Sequence[dict[str, Any]],
    root: str | Path,
    processor: EarthGPTXProcessor,
    workers: int = 1,
    progress: bool = True,
    aux: AuxSpec | None = None,
) -> EncodedDataset:
    """Encode ``records`` (training form: answers labelled, target masks read) into an :class:`EncodedDataset`.

    Records are grouped by chip so each GeoTIFF is read once; ``workers`` processes share the work. The result
    keeps the order of ``records``. With ``aux``, the auxiliary perception targets are built too (see
    :mod:`earthgptx.training.auxiliary`); they are dropped unless every chip has them.
    """
    if not records:
        raise ValueError("cannot encode an empty list of records")
    jobs, order = _chip_jobs(records, root, True, aux)
    chips = list(_run_jobs(jobs, processor, workers, progress, len(records)))
    n = len(records)
    max_length = max(len(s["input_ids"]) for chip in chips for s in chip.samples)
    size = processor.image_size
    tensors: dict[str, torch.Tensor] = {
        "images": torch.from_numpy(np.stack([chip.pixels for chip in chips])),
        "input_ids": torch.zeros(n, max_length, dtype=torch.int32),
        "labels": torch.full((n, max_length), IGNORE_INDEX, dtype=torch.int32),
    }
    for name in ("image_index", "modality_ids", "lengths", "prompt_offsets", "prompt_counts", "target_offsets",
                 "target_counts"):  # fmt: skip
        tensors[name] = torch.zeros(n, dtype=torch.long)
    # Row 0 of the prompt bank is an empty mask, for padded prompt slots.
    banks: dict[str, list[np.ndarray]] = {"prompt": [np.zeros((1, size, size), dtype=np.uint8)], "target": []}
    next_row = {"prompt": 1, "target": 0}
    region_rows: list[np.ndarray | None] = [None] * n
    samples = ((chip_index, sample) for chip_index, chip in enumerate(chips) for sample in chip.samples)
    for i, (chip_index, sample) in zip(order, samples, strict=True):
        region_rows[i] = sample["region"]
        _place_sample(tensors, i, chip_index, sample, banks, next_row)
    prompt_parts, target_parts = banks["prompt"], banks["target"]
    tensors["prompt_bank"] = torch.from_numpy(np.concatenate(prompt_parts))
    tensors["target_bank"] = torch.from_numpy(
        np.concatenate(target_parts) if target_parts else np.zeros((0, size, size), dtype=np.uint8)
    )
    aux_tensors = None
    if aux is not None and all(chip.aux is not None for chip in chips):
        aux_tensors = _aux_tensors(chips, region_rows, processor.max_prompts)
    dataset = EncodedDataset(list(records), **tensors, aux=aux_tensors)
    logger.info(
        "encoded %d records on %d chips (max length %d tokens, %.0f MB)",
        n, len(chips), max_length, dataset.nbytes() / 1e6,
    )  # fmt: skip
    return dataset


def _place_sample(
    tensors: dict[str, torch.Tensor],
    i: int,
    chip_index: int,
    sample: dict[str, Any],
    banks: dict[str, list[np.ndarray]],
    next_row: dict[str, int],
) -> None:
    """Write encoded sample ``i`` into the per-sample tensors; its prompt and target masks go to the end of their
    banks (``next_row``: each bank's next free row)."""
    ids = sample["input_ids"]
    tensors["image_index"][i] = chip_index
    tensors["modality_ids"][i] = sample["modality_id"]
    tensors["input_ids"][i, : len(ids)] = torch.from_numpy(ids)
    tensors["labels"][i, : len(ids)] = torch.from_numpy(sample["labels"])
    tensors["lengths"][i] = len(ids)
    for kind in ("prompt", "target"):
        masks = sample[f"{kind}_masks"]
        tensors[f"{kind}_offsets"][i], tensors[f"{kind}_counts"][i] = next_row[kind], len(masks)
        if len(masks):
            banks[kind].append(masks)
            next_row[kind] += len(masks)


def _aux_tensors(
    chips: list[_EncodedChip], region_rows: list[np.ndarray | None], max_prompts: int
) -> dict[str, torch.Tensor]:
    """The auxiliary targets as tensors: per chip, and ``aux_region`` per sample and prompt slot."""
    targets = [chip.aux for chip in chips if chip.aux is not None]
    return {
        "aux_token_semantic": torch.from_numpy(np.stack([t.token_semantic for t in targets])).half(),
        "aux_token_box": torch.from_numpy(np.stack([t.token_box for t in targets])).half(),
        "aux_token_box_valid": torch.from_numpy(np.stack([t.token_box_valid for t in targets])),
        "aux_token_centres": torch.from_numpy(np.stack([t.token_centres for t in targets])).half(),
        "aux_pixel_labels": torch.from_numpy(np.stack([t.pixel_labels for t in targets])),
        "aux_centre_map": torch.from_numpy(np.stack([t.centre_map for t in targets])),
        "aux_region": stack_region_targets(
            [r if r is not None else np.zeros((0, 0), dtype=np.int64) for r in region_rows], max_prompts
        ),
    }


def encode_for_inference(
    records: Sequence[dict[str, Any]],
    root: str | Path,
    processor: EarthGPTXProcessor,
    workers: int = 1,
    progress: bool = True,
) -> list[EncodedSample]:
    """Encode ``records`` in inference form (the prompt up to ``ASSISTANT:``), keeping their order."""
    jobs, order = _chip_jobs(records, root, False, None)
    results: list[EncodedSample | None] = [None] * len(records)
    chips = _run_jobs(jobs, processor, workers, progress, len(records))
    # one float32 tensor per chip, shared by its records
    shared = ((torch.from_numpy(chip.pixels.astype(np.float32)), chip.samples) for chip in chips)
    samples = ((pixels, sample) for pixels, chip_samples in shared for sample in chip_samples)
    for i, (pixels, sample) in zip(order, samples, strict=True):
        record = records[i]
        results[i] = EncodedSample(
            input_ids=sample["input_ids"].tolist(),
            labels=[IGNORE_INDEX] * len(sample["input_ids"]),
            pixel_values=pixels,
            modality_id=int(sample["modality_id"]),
            prompt_masks=torch.from_numpy(sample["prompt_masks"].astype(np.float32)),
            target_masks=torch.zeros(0, processor.image_size, processor.image_size),
            width=float(record.get("width", processor.image_size)),
            height=float(record.get("height", processor.image_size)),
            sample_id=str(record.get("id", "")),
        )
    return [r for r in results if r is not None]


# ------------------------------------------------------------------------------------------- sampling
class WeightedStepSampler:
    """Indices for each training step, drawn (with replacement) with per-task weights.

    A sample of task ``t`` is drawn with probability proportional to ``task_weights[t]`` (default 1), so a task's
    share of the steps is its share of the records times its weight. The draw for step ``s`` depends only on
    ``(seed, s)``: resuming at step ``s`` continues exactly where an uninterrupted run would be. With DDP each
    rank takes its slice of the global batch.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        task_weights: Mapping[str, float],
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        factors: Sequence[float] | None = None,
    ) -> None:
        weights = torch.tensor([float(task_weights.get(t, 1.0)) for t in tasks], dtype=torch.double)
        # Per-sample factors within a task (answer_balance_factors): the task shares stay the same.
        if factors is not None:
            if len(factors) != len(tasks):
                raise ValueError(f"{len(factors)} sampling factors for {len(tasks)} samples")
            weights = weights * torch.tensor([float(f) for f in factors], dtype=torch.double)
        if not len(weights) or float(weights.sum()) <= 0:
            raise ValueError("sampling weights must have a positive sum")
        self.weights = weights
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size

    def task_shares(self, tasks: Sequence[str]) -> dict[str, float]:
        """Expected share of each task in the sampled stream."""
        shares: dict[str, float] = defaultdict(float)
        total = float(self.weights.sum())
        for task, weight in zip(tasks, self.weights.tolist(), strict=True):
            shares[task] += weight / total
        return dict(sorted(shares.items()))

    def indices(self, step: int) -> torch.Tensor:
        """This rank's ``batch_size`` indices for ``step``."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        drawn = torch.multinomial(self.weights, self.batch_size * self.world_size, True, generator=generator)
        return drawn[self.rank :: self.world_size]


def answer_text(record: Mapping[str, Any]) -> str:
    """The record's answer as the model is taught to say it (the last turn)."""
    return str(record["conversations"][-1]["value"])


def answer_balance_factors(records: Sequence[Mapping[str, Any]], balance: Mapping[str, float]) -> list[float]:
    """Per-record sampling factors for ``train.answer_balance``: within a task with exponent ``a`` a record whose
    answer ``n`` records of the task share gets ``n**-a``, scaled so that the task's factors still sum to its
    number of records (its share of the steps stays what ``task_weights`` makes it). Other tasks get 1."""
    same: dict[tuple[str, str], int] = defaultdict(int)
    for r in records:
        if r["task"] in balance:
            same[(str(r["task"]), answer_text(r))] += 1
    scale: dict[str, float] = {}
    for task, exponent in balance.items():
        sizes = [n for (t, _), n in same.items() if t == task]
        if sizes:
            scale[task] = sum(sizes) / sum(n ** (1.0 - float(exponent)) for n in sizes)
    factors = []
    for r in records:
        task = str(r["task"])
        if task in scale:
            factors.append(scale[task] * same[(task, answer_text(r))] ** -float(balance[task]))
        else:
            factors.append(1.0)
    return factors


def load_split(records_path: Path, splits: Sequence[str]) -> list[dict[str, Any]]:
    """Records of ``records_path`` whose ``split`` is in ``splits`` (``all``: every record)."""
    records = load_records(records_path)
    if "all" in splits:
        return records
    return [r for r in records if r.get("split") in splits]
