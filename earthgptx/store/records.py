"""What callers hand to the repository: plain, immutable records with shapely geometries in EPSG:4326.

Ids are deterministic and chosen by the caller (a task id is a hash of scene, tile, level, task, prompts and
model version), so a re-delivered event produces the same record and the upsert lands on the same row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shapely.geometry.base import BaseGeometry


@dataclass(frozen=True, slots=True)
class SceneRecord:
    id: str
    source: str
    modality: str
    bands: tuple[str, ...]
    dtype: str
    width: int
    height: int
    object_bucket: str
    object_key: str
    footprint: BaseGeometry | None  # Polygon in EPSG:4326; None only for ungeoreferenced scenes
    crs: str | None = None
    transform: tuple[float, float, float, float, float, float] | None = None  # rasterio Affine order
    acquired_at: datetime | None = None
    sensor: str | None = None
    sha256: str | None = None
    stac_item: dict[str, Any] | None = None
    status: str = "ingested"  # used when the scene is new; re-ingesting keeps the stored status


@dataclass(frozen=True, slots=True)
class TaskRecord:
    id: str
    scene_id: str
    window: tuple[int, int, int, int]  # col_off, row_off, width, height in scene pixels (rasterio Window)
    level: int
    task: str
    instruction: str
    model_version: str
    prompts: tuple[dict[str, Any], ...] = ()
    chip_bucket: str | None = None
    chip_key: str | None = None
    parent_task_id: str | None = None
    aoi_id: str | None = None


@dataclass(frozen=True, slots=True)
class ResultRecord:
    task_id: str
    ordinal: int  # position among the task's results: 0 for a single answer, 0..n-1 for n grounded objects
    scene_id: str
    answer_text: str
    model_version: str
    label: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    geom: BaseGeometry | None = None  # EPSG:4326
    pixel_geom: BaseGeometry | None = None  # scene pixels
    score: float | None = None
    answer_parsed: bool = True  # False: the text did not parse: one row, no boxes (earthgptx.answers)
    parse_failure: str | None = None
    nodata_fraction: float | None = None


@dataclass(frozen=True, slots=True)
class AoiRecord:
    id: str
    geom: BaseGeometry  # Polygon or MultiPolygon in EPSG:4326
    instruction: str
    owner: str
    name: str | None = None
    active: bool = True


@dataclass(frozen=True, slots=True)
class TaskResults:
    """A task with its results, written together in one transaction (``Repository.record_results``)."""

    task: TaskRecord
    results: tuple[ResultRecord, ...]
    timings: dict[str, float] = field(default_factory=dict)  # merged into the task's stored timings
