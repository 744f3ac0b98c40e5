"""The DIOR-RSVG converter on a tiny fixture written by the test (2 JPEG images, 2 XML files, split files)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from earthgptx.data import load_records, validate_record
from earthgptx.data.convert_dior_rsvg import convert_dior_rsvg, main, read_annotations

XML = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<annotation>
  <filename>{filename}</filename>
  <source><database>DIOR</database></source>
  <size><width>{width}</width><height>{height}</height><depth>3</depth></size>
  <segmented>0</segmented>
{objects}
</annotation>
"""
pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

OBJECT = """  <object>
    <name>{name}</name>
    <pose>Unspecified</pose>
    <bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox>
    {description}
  </object>"""


def _write_jpeg(path: Path, width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Smooth content so JPEG compression keeps it recognisable.
    base = rng.integers(0, 255, (3, 1, 1), dtype=np.uint8)
    data = np.broadcast_to(base, (3, height, width)).copy()
    data[:, height // 4 : height // 2, width // 4 : width // 2] = 255
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(
            path, "w", driver="JPEG", width=width, height=height, count=3, dtype="uint8"
        ) as dst:
            dst.write(data)
    return data


@pytest.fixture
def dior_root(tmp_path: Path) -> Path:
    root = tmp_path / "DIOR-RSVG"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations").mkdir()
    _write_jpeg(root / "JPEGImages" / "00001.jpg", 80, 60, 0)
    _write_jpeg(root / "JPEGImages" / "00002.jpg", 40, 40, 1)
    objects_1 = "\n".join(
        [
            OBJECT.format(
                name="storagetank",
                x1=8,
                y1=6,
                x2=40,
                y2=30,
                description="<description>The white storage tank on the left</description>",
            ),
            OBJECT.format(
                name="Expressway-Service-area",
                x1=40,
                y1=30,
                x2=80,
                y2=60,
                description="<description>An expressway service area</description>",
            ),
        ]
    )
    objects_2 = OBJECT.format(name="vehicle", x1=10, y1=20, x2=20, y2=25, description="")
    (root / "Annotations" / "00001.xml").write_text(
        XML.format(filename="00001.jpg", width=80, height=60, objects=objects_1)
    )
    (root / "Annotations" / "00002.xml").write_text(
        XML.format(filename="00002.jpg", width=40, height=40, objects=objects_2)
    )
    (root / "train.txt").write_text("0\n2\n")
    (root / "test.txt").write_text("1\n")
    return root


def test_read_annotations_numbers_objects_across_files(dior_root: Path) -> None:
    images = read_annotations(dior_root)
    assert [i.stem for i in images] == ["00001", "00002"]
    assert [o.index for i in images for o in i.objects] == [0, 1, 2]
    assert [o.name for i in images for o in i.objects] == [
        "storage tank",
        "expressway service area",
        "vehicle",
    ]
    assert images[1].objects[0].description == ""


def test_convert_native_size(dior_root: Path, tmp_path: Path) -> None:
    path = convert_dior_rsvg(dior_root, tmp_path / "out", progress=False)
    records = load_records(path)
    assert len(records) == 6  # 3 objects x (grounding, region classification)
    for record in records:
        validate_record(record)
    by_id = {r["id"]: r for r in records}

    grounding = by_id["dior-rsvg-00001-0-grounding"]
    # Box [8, 6, 40, 30] of an 80 x 60 image on the 0-1000 grid: x / 80 * 1000, y / 60 * 1000.
    assert grounding["answer"]["box"] == [100, 100, 500, 500]
    assert grounding["conversations"][1]["value"] == "[100, 100, 500, 500]"
    assert "the white storage tank on the left" in grounding["conversations"][0]["value"]
    assert grounding["split"] == "train" and grounding["prompt_type"] == "none" and grounding["level"] == "L2"

    classification = by_id["dior-rsvg-00001-1-region_classification"]
    assert classification["prompts"] == [{"type": "box", "box": [40.0, 30.0, 80.0, 60.0]}]
    assert classification["conversations"][1]["value"] == "expressway service area"
    assert classification["split"] == "test"

    # No description: the class name stands in for the referring expression.
    assert "the vehicle" in by_id["dior-rsvg-00002-0-grounding"]["conversations"][0]["value"]

    with rasterio.open(tmp_path / "out" / grounding["image"]) as src:
        assert (src.count, src.width, src.height, src.dtypes[0]) == (3, 80, 60, "uint8")
        assert src.descriptions == ("red", "green", "blue")
        assert src.crs is None
        pixels = src.read()
    # The bright square survives JPEG decoding.
    assert pixels[:, 20, 30].min() > 200


def test_convert_resized_to_chip(dior_root: Path, tmp_path: Path) -> None:
    main(["--root", str(dior_root), "--out", str(tmp_path / "chips"), "--chip-size", "32", "--no-progress"])
    records = load_records(tmp_path / "chips" / "records.jsonl")
    by_id = {r["id"]: r for r in records}
    record = by_id["dior-rsvg-00001-0-region_classification"]
    assert (record["width"], record["height"]) == (32, 32)
    # [8, 6, 40, 30] scaled by 32/80 and 32/60.
    assert record["prompts"][0]["box"] == pytest.approx([3.2, 3.2, 16.0, 16.0])
    # The grid box does not depend on the resize.
    assert by_id["dior-rsvg-00001-0-grounding"]["answer"]["box"] == [100, 100, 500, 500]
    with rasterio.open(tmp_path / "chips" / record["image"]) as src:
        assert (src.width, src.height) == (32, 32)


def test_convert_rejects_unknown_task(dior_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="relation"):
        convert_dior_rsvg(dior_root, tmp_path / "x", tasks=["relation"], progress=False)
