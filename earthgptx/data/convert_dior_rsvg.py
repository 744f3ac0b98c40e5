"""Convert the DIOR-RSVG visual grounding dataset into EarthGPT-X records.

Expected layout (as distributed by the RSVG authors)::

    DIOR-RSVG/
      JPEGImages/00001.jpg ...          800×800 RGB optical images
      Annotations/00001.xml ...         Pascal-VOC-style XML, one <object> per referring expression:
                                        <filename>, <size>, <object><name/><bndbox><xmin/><ymin/><xmax/><ymax/>
                                        </bndbox><description/></object>
      train.txt  val.txt  test.txt      (optional) one integer per line: the index of an *object*, counted
                                        from 0 over the XML files in sorted order and their objects in file order

Each object becomes a ``grounding`` record (its ``description`` → ``[x1, y1, x2, y2]`` on the 0–1000 grid) and a
``region_classification`` record (its box as a box prompt → class name). Images are rewritten as GeoTIFF
(3 × uint8, red/green/blue, no CRS: DIOR carries no georeference), optionally resized to a square chip.

    python -m earthgptx.data.convert_dior_rsvg --root /data/DIOR-RSVG --out data/dior_rsvg --chip-size 128
"""

from __future__ import annotations

import argparse
import logging
import os
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from tqdm import tqdm

from earthgptx.data.raster_io import write_geotiff
from earthgptx.data.record_format import Record, dump_record
from earthgptx.data.vocabulary import TASK_LEVELS
from earthgptx.formats import IMAGE_TOKEN, box_to_grid, format_box

logger = logging.getLogger(__name__)

SOURCE = "DIOR-RSVG"
CONVERTED_TASKS = ("grounding", "region_classification")
SPLITS = ("train", "val", "test")

# DIOR's 20 class identifiers → the words our answers use.
DIOR_CLASS_NAMES: dict[str, str] = {
    "airplane": "airplane",
    "airport": "airport",
    "baseballfield": "baseball field",
    "basketballcourt": "basketball court",
    "bridge": "bridge",
    "chimney": "chimney",
    "dam": "dam",
    "expressway-service-area": "expressway service area",
    "expressway-toll-station": "expressway toll station",
    "golffield": "golf field",
    "groundtrackfield": "ground track field",
    "harbor": "harbor",
    "overpass": "overpass",
    "ship": "ship",
    "stadium": "stadium",
    "storagetank": "storage tank",
    "tenniscourt": "tennis court",
    "trainstation": "train station",
    "vehicle": "vehicle",
    "windmill": "windmill",
}

GROUNDING_TEMPLATES = (
    "Where is {desc}? Answer with a bounding box.",
    "Locate {desc}.",
    "Give the bounding box of {desc}.",
    "Find {desc} in this image.",
)
CLASSIFICATION_TEMPLATES = (
    "What is the object in <region1>?",
    "Classify <region1>.",
    "Which category does <region1> belong to?",
)


@dataclass(frozen=True)
class RsvgObject:
    index: int  # global object index (the numbering of the split files)
    name: str
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in image pixels
    description: str


@dataclass(frozen=True)
class RsvgImage:
    stem: str
    filename: str
    width: int
    height: int
    objects: tuple[RsvgObject, ...]


def class_name(raw: str) -> str:
    """DIOR class identifier (any case) → our class words (unknown names: lower case, hyphens as spaces)."""
    key = raw.strip().lower()
    return DIOR_CLASS_NAMES.get(key, key.replace("-", " ").replace("_", " "))


def _text(element: ET.Element, path: str, xml_path: Path) -> str:
    found = element.find(path)
    if found is None or found.text is None:
        raise ValueError(f"{xml_path}: missing <{path}>")
    return found.text.strip()


def read_annotations(root: Path) -> list[RsvgImage]:
    """All XML annotations under ``root/Annotations`` in sorted order, objects numbered globally from 0."""
    xml_files = sorted((root / "Annotations").glob("*.xml"))
    if not xml_files:
        raise FileNotFoundError(f"no XML annotations in {root / 'Annotations'}")
    images: list[RsvgImage] = []
    counter = 0
    for xml_path in xml_files:
        tree = ET.parse(xml_path).getroot()
        filename = _text(tree, "filename", xml_path)
        width = int(float(_text(tree, "size/width", xml_path)))
        height = int(float(_text(tree, "size/height", xml_path)))
        objects = []
        for element in tree.findall("object"):
            box = tuple(
                float(_text(element, f"bndbox/{k}", xml_path)) for k in ("xmin", "ymin", "xmax", "ymax")
            )
            description_node = element.find("description")
            description = (description_node.text or "").strip() if description_node is not None else ""
            objects.append(
                RsvgObject(
                    index=counter,
                    name=class_name(_text(element, "name", xml_path)),
                    box=(box[0], box[1], box[2], box[3]),
                    description=description,
                )
            )
            counter += 1
        images.append(RsvgImage(xml_path.stem, filename, width, height, tuple(objects)))
    return images


def read_splits(root: Path) -> dict[int, str]:
    """Object index → split from ``train.txt``/``val.txt``/``test.txt`` (absent files are skipped)."""
    splits: dict[int, str] = {}
    for split in SPLITS:
        path = root / f"{split}.txt"
        if not path.exists():
            continue
        for line in path.read_text().split():
            splits[int(line)] = split
    return splits


def _read_rgb(path: Path, size: int | None) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            if src.count < 3:
                raise ValueError(f"{path}: expected an RGB image, got {src.count} band(s)")
            shape = (3, size, size) if size else (3, src.height, src.width)
            data = src.read([1, 2, 3], out_shape=shape, resampling=Resampling.bilinear)
    return data.astype(np.uint8)


def _clip_box(
    box: tuple[float, float, float, float], width: int, height: int
) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = box
    return (
        min(max(x1, 0.0), width),
        min(max(y1, 0.0), height),
        min(max(x2, 0.0), width),
        min(max(y2, 0.0), height),
    )


def _sentence_start(text: str) -> str:
    return text[:1].lower() + text[1:] if text else text


def convert_dior_rsvg(
    root: str | Path,
    out_dir: str | Path,
    chip_size: int | None = None,
    tasks: Sequence[str] = CONVERTED_TASKS,
    default_split: str = "train",
    progress: bool = True,
) -> Path:
    """Convert a DIOR-RSVG folder; returns the path of the written ``records.jsonl``.

    ``chip_size`` resizes every image to a square chip (boxes scaled alike); ``None`` keeps native size.
    Objects not listed in any split file get ``default_split``.
    """
    for task in tasks:
        if task not in CONVERTED_TASKS:
            raise ValueError(f"DIOR-RSVG converts to {CONVERTED_TASKS}, not {task!r}")
    if default_split not in SPLITS:
        raise ValueError(f"default_split must be one of {SPLITS}, got {default_split!r}")
    source, out = Path(root), Path(out_dir)
    images = read_annotations(source)
    splits = read_splits(source)
    (out / "images").mkdir(parents=True, exist_ok=True)
    records_path = out / "records.jsonl"
    partial = out / "records.jsonl.partial"
    written = 0
    with partial.open("w", encoding="utf-8") as handle:
        for image in tqdm(images, disable=not progress, desc="DIOR-RSVG", unit="image"):
            pixels = _read_rgb(source / "JPEGImages" / image.filename, chip_size)
            height, width = pixels.shape[1:]
            name = f"images/{image.stem}.tif"
            write_geotiff(out / name, pixels, ("red", "green", "blue"), None, None, {"source": SOURCE})
            scale_x, scale_y = width / image.width, height / image.height
            for k, obj in enumerate(image.objects):
                x1, y1, x2, y2 = _clip_box(obj.box, image.width, image.height)
                box_px = [
                    round(x1 * scale_x, 2),
                    round(y1 * scale_y, 2),
                    round(x2 * scale_x, 2),
                    round(y2 * scale_y, 2),
                ]
                if not (box_px[0] < box_px[2] and box_px[1] < box_px[3]):
                    logger.warning("%s object %d: empty box %s, skipped", image.stem, k, obj.box)
                    continue
                common = {
                    "scene_id": image.stem,
                    "source": SOURCE,
                    "image": name,
                    "modality": "optical",
                    "bands": ["red", "green", "blue"],
                    "width": width,
                    "height": height,
                    "split": splits.get(obj.index, default_split),
                }
                for task in tasks:
                    record = _record(task, obj, k, box_px, width, height, common)
                    handle.write(dump_record(record) + "\n")
                    written += 1
    os.replace(partial, records_path)
    logger.info("converted %d images into %d records at %s", len(images), written, records_path)
    return records_path


def _record(
    task: str,
    obj: RsvgObject,
    k: int,
    box_px: list[float],
    width: int,
    height: int,
    common: dict[str, object],
) -> Record:
    # Deterministic phrasing per object, so a re-run writes identical files.
    pick = obj.index
    if task == "grounding":
        grid = box_to_grid(box_px, width, height)
        description = obj.description or f"the {obj.name}"
        question = GROUNDING_TEMPLATES[pick % len(GROUNDING_TEMPLATES)].format(
            desc=_sentence_start(description)
        )
        answer_text = format_box(grid)
        answer: dict[str, object] = {"box": grid, "class": obj.name, "description": description}
        prompts: list[dict[str, object]] = []
    else:
        question = CLASSIFICATION_TEMPLATES[pick % len(CLASSIFICATION_TEMPLATES)]
        answer_text = obj.name
        answer = {"label": obj.name}
        prompts = [{"type": "box", "box": box_px}]
    return {
        "id": f"dior-rsvg-{common['scene_id']}-{k}-{task}",
        **common,
        "prompts": prompts,
        "prompt_type": "box" if prompts else "none",
        "conversations": [
            {"from": "human", "value": f"{IMAGE_TOKEN}\n{question}"},
            {"from": "gpt", "value": answer_text},
        ],
        "level": TASK_LEVELS[task],
        "task": task,
        "answer": answer,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m earthgptx.data.convert_dior_rsvg", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--root", required=True, type=Path, help="DIOR-RSVG folder (JPEGImages/, Annotations/)"
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--chip-size", type=int, default=None, help="resize images to a square chip of this size"
    )
    parser.add_argument("--tasks", default=",".join(CONVERTED_TASKS))
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    convert_dior_rsvg(
        args.root,
        args.out,
        chip_size=args.chip_size,
        tasks=[t.strip() for t in args.tasks.split(",") if t.strip()],
        progress=not args.no_progress,
    )


if __name__ == "__main__":
    main()
