"""Generate the synthetic multi-source, multi-level visual prompting dataset.

Library: :func:`generate_dataset`. Command line::

    python -m earthgptx.data.generate --out data/generated/demo --scenes 2000 --seed 0

Output layout (paths in records are relative to ``records.jsonl``)::

    out_dir/records.jsonl       one instruction record per line (format: record_format.py / record_schema.json)
    out_dir/scenes.jsonl        per-scene ground truth (cover, objects, polygons, attributes, georeference)
    out_dir/dataset.json        generator settings, vocabulary and record counts
    out_dir/images/<scene>_<modality>.tif
    out_dir/masks/<scene>_obj<k>.png

Every scene draws its randomness from ``(seed, scene index)`` alone, so a scene is the same whatever
``n_scenes``, the worker count or the chosen tasks, and a scene's split never changes when more are added.

Three settings, all off by default (and then the output is bit for bit what it always was):

- ``negatives``: a share (``EMPTY_SCENE_FRACTION``) of scenes hold no object (their captions name none, their
  counts are 0, and no object-level question is asked of them), and every chip gains a prompt over background
  answered ``no object`` (region classification) and a count of a class it does not hold (answer 0). Each such
  record carries ``answer["negative"]`` (``tasks.NEGATIVE_KINDS``).
- ``randomise``: the share of scenes drawn with domain randomisation (``scene.SceneStyle``: object shape variants,
  texture, sensor gains and offsets, display stretch, SAR calibration and looks, thermal offset).
- ``effects``: randomised scenes also draw sensor and scene effects (``scene.SceneStyle``: a point-spread function,
  cast shadows, shaded roof slopes, SAR clutter texture) and composite roofs (notched blocks, T- and cross-shaped
  wings). It acts on randomised scenes only; with it off they are drawn exactly as before it existed.
- ``textures``: randomised scenes also give each object a brightness pattern drawn without regard to its class (a
  stripe, two halves, a rim or a speckle: ``render.object_texture``), in every modality. Randomised scenes only;
  with it off they are drawn exactly as before it existed.

Which scenes are empty or randomised is drawn from each scene's own stream, so ``build_scene`` with the same
settings rebuilds any scene exactly (the auxiliary targets rely on it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from earthgptx.data.raster_io import write_geotiff, write_mask_png
from earthgptx.data.record_format import dump_record
from earthgptx.data.render import render
from earthgptx.data.scene import Scene, SceneObject, draw_style, make_scene
from earthgptx.data.tasks import ChipContext, build_areas, build_negatives, build_records
from earthgptx.data.vocabulary import (
    ATTRIBUTE_VALUES,
    DATASET_VERSION,
    LAND_COVERS,
    OBJECT_CLASSES,
    RELATIONS,
    TASK_LEVELS,
    TASKS,
)
from earthgptx.formats import MODALITIES

logger = logging.getLogger(__name__)

# Salts that separate the random streams of one scene.
_LAYOUT, _SPLIT, _RENDER, _RECORDS = 0, 1, 100, 200
_OPTIONS, _NEGATIVES, _AREAS = 2, 300, 400
# With negatives on, this share of scenes holds no object.
EMPTY_SCENE_FRACTION = 0.1


@dataclass(frozen=True)
class SceneOptions:
    """The generator's optional settings (all off: the plain generator). ``randomise`` is a share of scenes;
    ``areas`` adds descriptions of large areas (``tasks.build_areas``); ``textures`` gives the objects of randomised
    scenes class-blind brightness patterns."""

    negatives: bool = False
    randomise: float = 0.0
    effects: bool = False
    areas: bool = False
    textures: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.randomise <= 1.0:
            raise ValueError(f"randomise is a share of scenes in [0, 1], got {self.randomise}")

    @property
    def plain(self) -> bool:
        return not self.negatives and self.randomise == 0.0 and not self.areas


PLAIN = SceneOptions()


@dataclass(frozen=True)
class _Job:
    out_dir: Path
    index: int
    seed: int
    chip_size: int
    tasks: tuple[str, ...]
    modalities: tuple[str, ...]
    records_per_task: int
    val_fraction: float
    test_fraction: float
    options: SceneOptions = PLAIN


def scene_split(seed: int, index: int, val_fraction: float, test_fraction: float) -> str:
    """The split of scene ``index``: drawn from the scene's own stream, so it is stable as n grows."""
    draw = np.random.default_rng([seed, index, _SPLIT]).random()
    if draw < test_fraction:
        return "test"
    if draw < test_fraction + val_fraction:
        return "val"
    return "train"


def scene_name(index: int) -> str:
    return f"scene{index:06d}"


def scene_is_randomised(seed: int, index: int, options: SceneOptions) -> bool:
    """Whether scene ``index`` is drawn with domain randomisation (the same draw as :func:`build_scene`'s, without
    building the scene)."""
    if options.randomise == 0.0:
        return False
    return bool(np.random.default_rng([seed, index, _OPTIONS]).random(2)[1] < options.randomise)


def build_scene(seed: int, index: int, chip_size: int, options: SceneOptions = PLAIN) -> Scene:
    """The scene ``index`` of the dataset with ``seed`` and ``options`` (layout only, nothing written)."""
    layout = np.random.default_rng([seed, index, _LAYOUT])
    if options.plain:
        return make_scene(layout, scene_name(index), chip_size)
    # Both draws are made whatever the settings, so turning one setting on never changes the other's scenes.
    draws = np.random.default_rng([seed, index, _OPTIONS])
    empty_draw, style_draw = draws.random(2)
    style = draw_style(draws, options.effects, options.textures) if style_draw < options.randomise else None
    n_objects = 0 if options.negatives and empty_draw < EMPTY_SCENE_FRACTION else None
    return make_scene(layout, scene_name(index), chip_size, n_objects=n_objects, style=style)


def _generate_one(job: _Job) -> tuple[list[str], dict[str, Any]]:
    scene = build_scene(job.seed, job.index, job.chip_size, job.options)
    split = scene_split(job.seed, job.index, job.val_fraction, job.test_fraction)
    written_masks: dict[int, str] = {}

    def mask_for(obj: SceneObject) -> str:
        if obj.index not in written_masks:
            name = f"masks/{scene.scene_id}_obj{obj.index}.png"
            write_mask_png(job.out_dir / name, obj.mask)
            written_masks[obj.index] = name
        return written_masks[obj.index]

    lines: list[str] = []
    for modality in job.modalities:
        m = MODALITIES.index(modality)
        image, bands = render(scene, modality, np.random.default_rng([job.seed, job.index, _RENDER + m]))
        name = f"images/{scene.scene_id}_{modality}.tif"
        tags = {
            "scene_id": scene.scene_id,
            "modality": modality,
            "generator": f"earthgptx-synthetic {DATASET_VERSION}",
        }
        write_geotiff(job.out_dir / name, image, bands, scene.georef.crs, scene.georef.transform, tags)
        ctx = ChipContext(
            scene=scene, modality=modality, bands=bands, image=name, split=split, mask_for=mask_for
        )
        rng = np.random.default_rng([job.seed, job.index, _RECORDS + m])
        lines.extend(dump_record(r) for r in build_records(ctx, job.tasks, rng, job.records_per_task))
        if job.options.negatives:
            negatives_rng = np.random.default_rng([job.seed, job.index, _NEGATIVES + m])
            lines.extend(dump_record(r) for r in build_negatives(ctx, negatives_rng, job.tasks))
        if job.options.areas:
            areas_rng = np.random.default_rng([job.seed, job.index, _AREAS + m])
            lines.extend(dump_record(r) for r in build_areas(ctx, areas_rng, job.tasks))
    truth = scene.to_json()
    truth["split"] = split
    return lines, truth


def _run(jobs: Sequence[_Job], workers: int) -> Iterator[tuple[list[str], dict[str, Any]]]:
    if workers <= 1:
        yield from map(_generate_one, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        # map keeps scene order, so the output files do not depend on the worker count.
        yield from pool.map(_generate_one, jobs, chunksize=16)


def generate_dataset(
    out_dir: str | Path,
    n_scenes: int,
    seed: int,
    chip_size: int = 128,
    tasks: Sequence[str] | None = None,
    modalities: Sequence[str] | None = None,
    progress: bool = True,
    *,
    records_per_task: int = 1,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    workers: int = 1,
    options: SceneOptions = PLAIN,
) -> Path:
    """Write ``n_scenes`` scenes, each rendered in every chosen modality, and their records.

    Returns the path of ``records.jsonl``. Each (scene, modality) gets ``records_per_task`` records per task
    (relations need two objects and grounding a unique referring expression, so a few are skipped).
    """
    if n_scenes < 1:
        raise ValueError(f"n_scenes must be at least 1, got {n_scenes}")
    if records_per_task < 1:
        raise ValueError(f"records_per_task must be at least 1, got {records_per_task}")
    if not (0.0 <= val_fraction and 0.0 <= test_fraction and val_fraction + test_fraction < 1.0):
        raise ValueError(f"bad split fractions: val {val_fraction}, test {test_fraction}")
    chosen_tasks = tuple(tasks) if tasks else TASKS
    chosen_modalities = tuple(modalities) if modalities else MODALITIES
    for task in chosen_tasks:
        if task not in TASK_LEVELS:
            raise ValueError(f"unknown task {task!r}; expected some of {list(TASKS)}")
    for modality in chosen_modalities:
        if modality not in MODALITIES:
            raise ValueError(f"unknown modality {modality!r}; expected some of {list(MODALITIES)}")

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    jobs = [
        _Job(
            out,
            i,
            seed,
            chip_size,
            chosen_tasks,
            chosen_modalities,
            records_per_task,
            val_fraction,
            test_fraction,
            options,
        )
        for i in range(n_scenes)
    ]
    records_path = out / "records.jsonl"
    counts: Counter[str] = Counter()
    started = time.perf_counter()
    records_tmp, scenes_tmp = out / "records.jsonl.partial", out / "scenes.jsonl.partial"
    with (
        records_tmp.open("w", encoding="utf-8") as records_file,
        scenes_tmp.open("w", encoding="utf-8") as scenes_file,
    ):
        bar = tqdm(total=n_scenes, disable=not progress, desc="scenes", unit="scene")
        for lines, truth in _run(jobs, workers):
            for line in lines:
                records_file.write(line + "\n")
            counts[f"split:{truth['split']}"] += 1
            counts["records"] += len(lines)
            scenes_file.write(json.dumps(truth, separators=(",", ":")) + "\n")
            bar.update(1)
        bar.close()
    # Renames last, so a crashed run never leaves a records.jsonl that looks complete.
    os.replace(records_tmp, records_path)
    os.replace(scenes_tmp, out / "scenes.jsonl")
    elapsed = time.perf_counter() - started
    meta = {
        "format": "earthgptx-records",
        "version": DATASET_VERSION,
        "seed": seed,
        "n_scenes": n_scenes,
        "chip_size": chip_size,
        "tasks": list(chosen_tasks),
        "modalities": list(chosen_modalities),
        "records_per_task": records_per_task,
        "split_fractions": {"val": val_fraction, "test": test_fraction},
        "negatives": options.negatives,
        "randomise": options.randomise,
        **({"effects": True} if options.effects else {}),
        **({"areas": True} if options.areas else {}),
        **({"textures": True} if options.textures else {}),
        "counts": dict(sorted(counts.items())),
        "vocabulary": {
            "land_covers": list(LAND_COVERS),
            "object_classes": list(OBJECT_CLASSES),
            "attributes": {k: list(v) for k, v in ATTRIBUTE_VALUES.items()},
            "relations": list(RELATIONS),
        },
    }
    (out / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    logger.info(
        "wrote %d records for %d scenes to %s in %.1f s (%.1f scenes/s)",
        counts["records"], n_scenes, records_path, elapsed, n_scenes / max(elapsed, 1e-9),
    )  # fmt: skip
    return records_path


def _parse_list(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [item.strip() for item in text.split(",") if item.strip()]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m earthgptx.data.generate", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--scenes", required=True, type=int, help="number of scenes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chip-size", type=int, default=128)
    parser.add_argument("--tasks", help=f"comma-separated subset of: {','.join(TASKS)}")
    parser.add_argument("--modalities", help=f"comma-separated subset of: {','.join(MODALITIES)}")
    parser.add_argument("--records-per-task", type=int, default=1)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument(
        "--workers", type=int, default=1, help="processes (output is identical for any value)"
    )
    parser.add_argument(
        "--negatives", action="store_true", help="add negatives (empty scenes, background prompts)"
    )
    parser.add_argument("--randomise", type=float, default=0.0, help="share of domain-randomised scenes")
    parser.add_argument(
        "--effects", action="store_true", help="randomised scenes also get blur, shadows, clutter, composite roofs"
    )
    parser.add_argument(
        "--areas", action="store_true", help="half the chips also get a description of a large area (not one object)"
    )
    parser.add_argument(
        "--textures", action="store_true", help="objects of randomised scenes get class-blind brightness patterns"
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    path = generate_dataset(
        args.out,
        args.scenes,
        args.seed,
        chip_size=args.chip_size,
        tasks=_parse_list(args.tasks),
        modalities=_parse_list(args.modalities),
        progress=not args.no_progress,
        records_per_task=args.records_per_task,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        workers=args.workers,
        options=SceneOptions(args.negatives, args.randomise, args.effects, args.areas, args.textures),
    )
    logger.info("records: %s", path)


if __name__ == "__main__":
    main()
