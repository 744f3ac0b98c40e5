"""What promptgen does with one event: tile a new scene, ask the next level of the cascade, register AOIs and turn
ad-hoc queries into tasks.

- ``on_scene_ingested``: the COG is read window by window into model-size chips (``earthgptx.geo.tiles``,
  ``earthgptx.scenes.chips``), each stored in MinIO as a GeoTIFF with its own transform and CRS; every tile gets
  the L1 questions, and every active AOI the footprint touches gets a polygon prompt on each tile it covers.
- ``on_result_stored``: the answer of a level makes the next level's tasks (``cascade``); the queries the task
  served are marked answered once all their tasks are.
- ``on_query_requested``: a standing query registers (or deactivates) an AOI; an ad-hoc one becomes tasks on the
  covering scenes' tiles (newest scene or all), or is answered "no coverage" at once.

Empty tiles. A tile whose chip is entirely no-data or NaN (the scene's declared no-data values) is never written
nor asked about: it is skipped with a log line and counted (``egx_promptgen_empty_chips_total``). Every task
carries the share of its chip that is no-data (``PromptTask.nodata_fraction``), measured when promptgen cut the
chip (0 for a chip cut by an earlier process: the inference service measures it again).

Ids. A task id hashes scene, tile, level, task, prompts and model version (``earthgptx.events.task_id``), plus the
instruction and the AOI or query it serves (two classes counted on one tile are two tasks). Tasks are inserted
if new and published with their id as event id, so a re-delivered event makes nothing new.

Failures. Bad input (an unknown task, an invalid GeoJSON or self-intersecting polygon, a prompt outside its scene)
raises ``PermanentError`` (dead letter with the reason); the store's and MinIO's errors propagate as they are.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import rasterio
import shapely
from google.protobuf import json_format
from google.protobuf.message import Message
from prometheus_client import Counter
from shapely.geometry import MultiPolygon, Point, Polygon, box
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

from earthgptx import events
from earthgptx.bus import PermanentError, topics
from earthgptx.geo import GeoreferenceError
from earthgptx.geo.tiles import clip_to_tile, scene_tiles, scene_to_chip
from earthgptx.radiometry import nodata_mask
from earthgptx.scenes.chips import CHIP_MEDIA_TYPE, chip_geotiff, chip_key, read_chip
from earthgptx.store.pipeline import QueryRow, SceneInfo, StoredAnswer, StoredAoi, TileTask
from earthgptx.store.records import AoiRecord, TaskRecord
from earthgptx.v1.events_pb2 import (
    DetectedBox,
    DetectedBoxList,
    Level,
    Modality,
    ObjectRef,
    PromptTask,
    QueryCoverage,
    QueryRequested,
    ResultStored,
    SceneIngested,
    TileWindow,
    VisualPrompt,
)
from earthgptx.visual_prompts import geometry_to_message, message_to_geometry
from services.promptgen import cascade
from services.promptgen.cascade import GroundedObject, Policy, Question

log = logging.getLogger(__name__)

PRODUCER_NAME = "promptgen"
MAX_POLYGON_VERTICES = 64
_REMEMBERED_CHIPS = 50_000

EMPTY_CHIPS = Counter(
    "egx_promptgen_empty_chips_total", "Tiles never sent to the model: every pixel of the chip is no-data or NaN"
)


class Store(Protocol):
    """The part of ``earthgptx.store.pipeline.PipelineStore`` the handler uses (tests pass a fake)."""

    def scene(self, scene_id: str) -> SceneInfo | None: ...
    def scenes_covering(self, geometry: BaseGeometry, *, newest_only: bool) -> list[SceneInfo]: ...
    def active_aois(self, footprint: BaseGeometry) -> list[StoredAoi]: ...
    def upsert_aoi(self, aoi: AoiRecord) -> None: ...
    def set_aoi_active(self, aoi_id: str, active: bool) -> bool: ...
    def add_tasks(self, tasks: Sequence[TaskRecord]) -> int: ...
    def done_tasks(self, task_ids: Sequence[str]) -> set[str]: ...
    def task(self, task_id: str) -> TileTask | None: ...
    def tile_tasks(self, scene_id: str, window: tuple[int, int, int, int]) -> list[TileTask]: ...
    def answers(self, task_ids: Sequence[str]) -> list[StoredAnswer]: ...
    def add_query(
        self, query_id: str, *, instruction: str, owner: str, geom: BaseGeometry | None, scene_id: str | None,
        scene_prompt: dict[str, Any] | None, coverage: str,
    ) -> QueryRow: ...  # fmt: skip
    def set_query_tasks(self, query_id: str, task_ids: Sequence[str]) -> None: ...
    def answer_no_coverage(self, query_id: str, reason: str) -> None: ...
    def mark_answered(self, task_id: str) -> list[str]: ...


class Objects(Protocol):
    """The part of ``earthgptx.store.objects.ObjectStore`` the handler uses."""

    def download_file(self, bucket: str, key: str, path: str | Path, *, verify: bool = ...) -> Any: ...
    def put_bytes(self, bucket: str, key: str, data: bytes, *, content_type: str = ...) -> Any: ...
    def exists(self, bucket: str, key: str) -> bool: ...
    def get_stream(self, bucket: str, key: str) -> Any: ...


class Publisher(Protocol):
    """The part of ``earthgptx.bus.EventProducer`` the handler uses."""

    def publish(self, topic: str, key: str, message: Message, *, trace_id: str = "") -> Any: ...
    def wait(self, futures: Sequence[Any], *, timeout_s: float = 30.0) -> list[Any]: ...


def prompt_task_id(task: PromptTask) -> str:
    """The deterministic id of a task (see the module docstring)."""
    base = events.task_id(task.scene_id, task.tile, task.level, task.task, task.prompts, task.model_version)
    return events.deterministic_id("promptgen-task", base, task.instruction, task.aoi_id, task.query_id)


def _modality_name(scene: SceneInfo) -> str:
    return scene.modality.lower()


def _modality_enum(scene: SceneInfo) -> str:
    name = f"MODALITY_{scene.modality.upper()}"
    return name if name in Modality.keys() else "MODALITY_UNSPECIFIED"


def _polygon_prompt(geometry: BaseGeometry) -> BaseGeometry | None:
    """The largest polygon part of a clipped region, without holes and with a bounded vertex count."""
    parts = [g for g in getattr(geometry, "geoms", [geometry]) if isinstance(g, Polygon) and g.area >= 1.0]
    if not parts:
        return None
    exterior = Polygon(max(parts, key=lambda p: p.area).exterior)
    tolerance = 0.25
    while len(exterior.exterior.coords) > MAX_POLYGON_VERTICES:
        exterior = exterior.simplify(tolerance, preserve_topology=True)
        tolerance *= 2
    return exterior


class PromptgenHandler:
    """Handles ``scenes.ingested``, ``results.stored`` and ``queries.requested``."""

    def __init__(
        self,
        store: Store,
        objects: Objects,
        publisher: Publisher,
        *,
        model_version: str,
        chips_bucket: str,
        chip_size: int,
        tile_size: int,
        overlap: int = 0,
        policy: Policy | None = None,
        max_query_tiles: int = 4,
        output_topic: str = topics.PROMPTS_TASKS,
        publish_timeout_s: float = 30.0,
    ) -> None:
        if not model_version:
            raise ValueError("promptgen needs the served model's version (task ids depend on it)")
        self.store = store
        self.objects = objects
        self.publisher = publisher
        self.model_version = model_version
        self.chips_bucket = chips_bucket
        self.chip_size = chip_size
        self.tile_size = tile_size
        self.overlap = overlap
        self.policy = policy or Policy()
        self.max_query_tiles = max_query_tiles
        self.output_topic = output_topic
        self.publish_timeout_s = publish_timeout_s
        # Chip key -> share of no-data pixels, for the chips this process cut (bounded, oldest forgotten first).
        self._nodata_fractions: OrderedDict[str, float] = OrderedDict()

    # -- scenes ----------------------------------------------------------------------------------------------

    def _tiles(self, scene: SceneInfo) -> list[TileWindow]:
        return scene_tiles(
            scene.width, scene.height, scene.transform, scene.crs if scene.transform is not None else None,
            tile_size=self.tile_size, chip_size=self.chip_size, overlap=self.overlap,
        )  # fmt: skip

    def on_scene_ingested(self, event: SceneIngested) -> None:
        scene = self.store.scene(event.scene_id)
        if scene is None:
            raise PermanentError(f"scene {event.scene_id or '(no id)'} is not in the catalogue")
        tiles = self._tiles(scene)
        chips = self._write_chips(scene, tiles)
        tasks: list[PromptTask] = []
        for tile in tiles:
            chip = chips.get(tile.tile_index)
            if chip is None:  # entirely no-data
                continue
            tasks += [self._task(scene, tile, chip, q) for q in cascade.scene_questions(self.policy, _modality_name(scene))]
        if scene.footprint is not None and scene.transform is not None:
            for aoi in self.store.active_aois(scene.footprint):
                tasks += self._aoi_tasks(scene, tiles, chips, aoi)
        created = self._emit(tasks, event.header.trace_id)
        log.info(
            "scene %s: %d tile(s), %d task(s) (%d new)", scene.id, len(tiles), len(tasks), created,
            extra={"scene_id": scene.id, "tiles": len(tiles), "tasks": len(tasks), "trace_id": event.header.trace_id},
        )  # fmt: skip

    def _write_chips(self, scene: SceneInfo, tiles: Sequence[TileWindow]) -> dict[int, ObjectRef]:
        """Each tile's chip in MinIO (written only when missing); the COG is read window by window. Tiles whose chip
        is entirely no-data or NaN are left out of the answer (and never written)."""
        refs = {t.tile_index: ObjectRef(bucket=self.chips_bucket, key=chip_key(scene.id, t),
                                        content_type=CHIP_MEDIA_TYPE) for t in tiles}  # fmt: skip
        missing = [t for t in tiles if not self.objects.exists(self.chips_bucket, refs[t.tile_index].key)]
        if not missing:
            return refs
        empty: list[int] = []
        with tempfile.TemporaryDirectory(prefix="egx-promptgen-") as folder:
            local = Path(folder) / "scene.tif"
            self.objects.download_file(scene.object_bucket, scene.object_key, local)
            with rasterio.open(local) as dataset:
                nodata = list(dataset.nodatavals)
                # A GeoTIFF holds one no-data value for all its bands: the scene's (GDAL writes the same one to each).
                declared = next((v for v in nodata if v is not None), None)
                for tile in missing:
                    pixels = read_chip(dataset, tile)
                    ref = refs[tile.tile_index]
                    fraction = float(nodata_mask(pixels, nodata).mean())
                    if fraction >= 1.0:
                        empty.append(tile.tile_index)
                        del refs[tile.tile_index]
                        continue
                    data = chip_geotiff(pixels, tile, band_names=scene.bands, nodata=declared)
                    self.objects.put_bytes(self.chips_bucket, ref.key, data, content_type=CHIP_MEDIA_TYPE)
                    ref.size_bytes = len(data)
                    self._remember_nodata(ref.key, fraction)
        if empty:
            EMPTY_CHIPS.inc(len(empty))
            log.info(
                "scene %s: %d tile(s) skipped, every pixel no-data or NaN: %s", scene.id, len(empty), empty,
                extra={"scene_id": scene.id, "empty_tiles": empty},
            )  # fmt: skip
        return refs

    def _remember_nodata(self, key: str, fraction: float) -> None:
        self._nodata_fractions[key] = fraction
        self._nodata_fractions.move_to_end(key)
        while len(self._nodata_fractions) > _REMEMBERED_CHIPS:
            self._nodata_fractions.popitem(last=False)

    def _chip_ref(self, scene: SceneInfo, tile: TileWindow) -> ObjectRef | None:
        """The tile's chip (written if missing), or ``None`` when the tile is entirely no-data."""
        return self._write_chips(scene, [tile]).get(tile.tile_index)

    def _aoi_tasks(
        self, scene: SceneInfo, tiles: Sequence[TileWindow], chips: dict[int, ObjectRef], aoi: StoredAoi
    ) -> list[PromptTask]:
        assert scene.footprint is not None
        area = aoi.geom.intersection(scene.footprint)
        question = Question(cascade.L2, cascade.AOI_TASK, cascade.region_instruction(aoi.instruction))
        tasks = []
        for tile in tiles:
            try:
                region = _polygon_prompt(clip_to_tile(tile, area))
            except GeoreferenceError as exc:
                raise PermanentError(f"AOI {aoi.id} on scene {scene.id}: {exc}") from exc
            if region is None or tile.tile_index not in chips:  # outside the AOI, or entirely no-data
                continue
            asked = Question(question.level, question.task, question.instruction,
                             (cascade.Prompt("polygon", region),))  # fmt: skip
            tasks.append(self._task(scene, tile, chips[tile.tile_index], asked, aoi_id=aoi.id))
        return tasks

    # -- the cascade -----------------------------------------------------------------------------------------

    def on_result_stored(self, event: ResultStored) -> None:
        task = self.store.task(event.task_id)
        if task is None:
            raise PermanentError(f"results.stored for unknown task {event.task_id or '(no id)'}")
        answered = self.store.mark_answered(task.id)
        if answered:
            log.info("queries answered: %s", answered, extra={"queries": answered, "task_id": task.id})
        if task.aoi_id or task.task in (cascade.AOI_TASK, cascade.QUERY_TASK):
            return
        scene = self.store.scene(event.scene_id)
        if scene is None:
            raise PermanentError(f"results.stored for task {task.id} of unknown scene {event.scene_id}")
        tile = event.tile
        # The stored event names the tile; the chip is the one the answered task was asked about.
        chip = ObjectRef(bucket=task.chip_bucket or "", key=task.chip_key or "", content_type=CHIP_MEDIA_TYPE)
        if not chip.key:
            raise PermanentError(f"task {task.id} has no chip to ask the next level about")
        modality = _modality_name(scene)
        questions: list[Question] = []
        if task.level == cascade.L1 and task.task == cascade.COUNTING_TASK:
            questions = self._after_count(task, modality)
        elif task.level == cascade.L2 and task.task == cascade.GROUNDING_TASK:
            objects = [
                GroundedObject(d.label, (d.box.x1, d.box.y1, d.box.x2, d.box.y2), d.score, f"{task.id}:{i}")
                for i, d in enumerate(self._objects(event))
            ]
            questions = cascade.attribute_questions(self.policy, modality, objects)
        tasks = [self._task(scene, tile, chip, q, parent=task.id) for q in questions]
        if task.level in (cascade.L1, cascade.L2):
            tasks += [self._task(scene, tile, chip, q) for q in self._relations_when_tile_grounded(scene, tile)]
        if tasks:
            self._emit(tasks, event.header.trace_id)

    def _after_count(self, task: TileTask, modality: str) -> list[Question]:
        name = cascade.counted_class(task.instruction, modality)
        if name is None:
            return []
        return cascade.grounding_questions(self.policy, modality, name, self._count(task.id))

    def _count(self, task_id: str) -> int:
        for answer in self.store.answers([task_id]):
            value = answer.attributes.get("count")
            if isinstance(value, int | float) and math.isfinite(value):
                return int(value)
        return 0

    def _objects(self, event: ResultStored) -> list[DetectedBox]:
        if event.HasField("objects_claim") and event.objects_claim.key:
            claim = event.objects_claim
            with self.objects.get_stream(claim.bucket, claim.key) as chunks:
                payload = b"".join(chunks)
            return list(DetectedBoxList.FromString(payload).boxes)
        return list(event.objects)

    def _relations_when_tile_grounded(self, scene: SceneInfo, tile: TileWindow) -> list[Question]:
        """L4, once every L1 question of the tile is answered and every grounding those counts call for too."""
        if cascade.L4 not in self.policy.levels:
            return []
        window = (tile.col_off, tile.row_off, tile.width, tile.height)
        stored = [t for t in self.store.tile_tasks(scene.id, window) if not t.aoi_id]
        level1 = [t for t in stored if t.level == cascade.L1]
        if not level1 or any(t.status != "done" for t in level1):
            return []
        modality = _modality_name(scene)
        by_instruction = {(t.level, t.task, t.instruction): t for t in stored}
        grounding: list[TileTask] = []
        for count_task in (t for t in level1 if t.task == cascade.COUNTING_TASK):
            for q in self._after_count(count_task, modality):
                if q.task != cascade.GROUNDING_TASK:
                    continue
                found = by_instruction.get((q.level, q.task, q.instruction))
                if found is None or found.status != "done":
                    return []
                grounding.append(found)
        objects = []
        for answer in self.store.answers([t.id for t in grounding]):
            if answer.pixel_geom is None or answer.pixel_geom.geom_type != "Polygon":
                continue
            x1, y1, x2, y2 = scene_to_chip(tile, answer.pixel_geom).bounds
            objects.append(GroundedObject(answer.label or "", (x1, y1, x2, y2), answer.score or 0.0,
                                          f"{answer.task_id}:{answer.ordinal}"))  # fmt: skip
        return cascade.relation_questions(self.policy, objects)

    # -- queries -----------------------------------------------------------------------------------------------

    def on_query_requested(self, event: QueryRequested) -> None:
        if not event.query_id.strip():
            raise PermanentError("query without an id")
        if event.standing:
            self._register_aoi(event)
            return
        instruction = " ".join(event.instruction.split())
        if not instruction:
            raise PermanentError(f"query {event.query_id}: no instruction")
        coverage = "all" if event.coverage == QueryCoverage.QUERY_COVERAGE_ALL else "newest"
        if event.scene_id:
            self._scene_query(event, instruction, coverage)
            return
        geometry = _query_geometry(event)
        row = self.store.add_query(
            event.query_id, instruction=instruction, owner=event.owner, geom=geometry, scene_id=None,
            scene_prompt=None, coverage=coverage,
        )  # fmt: skip
        if row.status != "pending" or row.task_ids:
            return  # a re-delivery: the query was asked (or answered) already
        scenes = [s for s in self.store.scenes_covering(geometry, newest_only=coverage == "newest")
                  if s.transform is not None]  # fmt: skip
        tasks: list[PromptTask] = []
        for scene in scenes:
            tasks += self._query_tasks(scene, event, instruction, lambda tile: clip_to_tile(tile, geometry))
        if not tasks:  # no scene, or only no-data pixels where the query asks
            self.store.answer_no_coverage(event.query_id, "no scene covers the query's area with data")
            log.info("query %s: no coverage", event.query_id, extra={"query_id": event.query_id})
            return
        self._emit(tasks, event.header.trace_id)
        self.store.set_query_tasks(event.query_id, [t.task_id for t in tasks])
        log.info("query %s: %d task(s) on %d scene(s)", event.query_id, len(tasks), len(scenes),
                 extra={"query_id": event.query_id, "tasks": len(tasks)})  # fmt: skip

    def _scene_query(self, event: QueryRequested, instruction: str, coverage: str) -> None:
        scene = self.store.scene(event.scene_id)
        if scene is None:
            raise PermanentError(f"query {event.query_id}: scene {event.scene_id} is not in the catalogue")
        try:
            prompt = message_to_geometry(event.scene_prompt)
        except ValueError as exc:
            raise PermanentError(f"query {event.query_id}: {exc}") from exc
        _check_valid(event.query_id, prompt)
        if not box(0, 0, scene.width, scene.height).contains(prompt):
            raise PermanentError(
                f"query {event.query_id}: prompt {prompt.bounds} lies outside the {scene.width} x {scene.height} "
                f"pixels of scene {scene.id}"
            )
        row = self.store.add_query(
            event.query_id, instruction=instruction, owner=event.owner, geom=None, scene_id=scene.id,
            scene_prompt=json_format.MessageToDict(event.scene_prompt), coverage=coverage,
        )  # fmt: skip
        if row.status != "pending" or row.task_ids:
            return
        kind = event.scene_prompt.WhichOneof("shape")

        def region(tile: TileWindow) -> BaseGeometry:
            return scene_to_chip(tile, prompt).intersection(box(0, 0, tile.chip_width, tile.chip_height))

        tasks = self._query_tasks(scene, event, instruction, region, kind=kind)
        if not tasks:
            reason = f"no tile of scene {scene.id} can be asked about the prompt (only no-data there, or degenerate)"
            self.store.answer_no_coverage(event.query_id, reason)
            return
        self._emit(tasks, event.header.trace_id)
        self.store.set_query_tasks(event.query_id, [t.task_id for t in tasks])

    def _query_tasks(self, scene: SceneInfo, event: QueryRequested, instruction: str, region: Any,
                     kind: str | None = None) -> list[PromptTask]:  # fmt: skip
        """Tasks on the tiles of one scene that the prompt touches (a point: the tile it is most central in)."""
        tiles = self._tiles(scene)
        asked: list[tuple[float, TileWindow, BaseGeometry]] = []
        for tile in tiles:
            try:
                shape = region(tile)
            except GeoreferenceError as exc:
                raise PermanentError(f"query {event.query_id} on scene {scene.id}: {exc}") from exc
            if shape.is_empty:
                continue
            centre = Point(tile.chip_width / 2.0, tile.chip_height / 2.0)
            asked.append((shape.centroid.distance(centre), tile, shape))
        if not asked:
            return []
        if asked[0][2].geom_type == "Point":
            asked = [min(asked, key=lambda a: (a[0], a[1].tile_index))]
        asked = asked[: self.max_query_tiles]
        tasks = []
        for _, tile, shape in asked:
            prompt = _query_prompt(shape, kind or ("box" if len(event.bbox_4326) == 4 and not event.geojson_4326 else None))
            if prompt is None:
                continue
            question = Question(cascade.L2, cascade.QUERY_TASK, cascade.region_instruction(instruction), (prompt,))
            chip = self._chip_ref(scene, tile)
            if chip is None:  # entirely no-data: nothing to ask about
                continue
            tasks.append(self._task(scene, tile, chip, question, query_id=event.query_id))
        return tasks

    def _register_aoi(self, event: QueryRequested) -> None:
        if event.deactivate:
            self.store.set_aoi_active(event.query_id, False)
            return
        geometry = _parse_geojson(event.query_id, event.geojson_4326)
        if not isinstance(geometry, Polygon | MultiPolygon):
            raise PermanentError(f"AOI {event.query_id}: must be a Polygon or MultiPolygon, got {geometry.geom_type}")
        if not event.instruction.strip():
            raise PermanentError(f"AOI {event.query_id}: no instruction")
        self.store.upsert_aoi(AoiRecord(
            id=event.query_id, geom=geometry, instruction=" ".join(event.instruction.split()),
            owner=event.owner or "unknown", name=event.name or None,
        ))  # fmt: skip
        log.info("AOI %s registered", event.query_id, extra={"aoi_id": event.query_id})

    # -- tasks ---------------------------------------------------------------------------------------------------

    def _task(
        self, scene: SceneInfo, tile: TileWindow, chip: ObjectRef, question: Question, *,
        parent: str = "", aoi_id: str = "", query_id: str = "",
    ) -> PromptTask:  # fmt: skip
        task = PromptTask(
            scene_id=scene.id, chip=chip, tile=tile, level=Level.Name(question.level), task=question.task,
            instruction=question.instruction, modality=_modality_enum(scene), bands=list(scene.bands),
            model_version=self.model_version, parent_task_id=parent, aoi_id=aoi_id, query_id=query_id,
            nodata_fraction=self._nodata_fractions.get(chip.key, 0.0),
        )  # fmt: skip
        for prompt in question.prompts:
            task.prompts.append(_prompt_message(prompt.geometry, prompt.kind))
        task.task_id = prompt_task_id(task)
        return task

    def _emit(self, tasks: Sequence[PromptTask], trace_id: str) -> int:
        """Insert the new tasks, then publish those not answered yet (a re-delivery publishes the same events
        again, with the same ids, but never asks the model twice for a stored answer)."""
        if not tasks:
            return 0
        created = self.store.add_tasks([_task_record(t) for t in tasks])
        done = self.store.done_tasks([t.task_id for t in tasks])
        futures = []
        for task in (t for t in tasks if t.task_id not in done):
            task.header.event_id = task.task_id
            futures.append(self.publisher.publish(self.output_topic, task.scene_id, task, trace_id=trace_id))
        for outcome in self.publisher.wait(futures, timeout_s=self.publish_timeout_s):
            if isinstance(outcome, Exception):
                raise outcome
        return created


def _prompt_message(geometry: BaseGeometry, kind: str) -> VisualPrompt:
    if kind == "point":
        return geometry_to_message(geometry, "point")
    if kind == "box":
        return geometry_to_message(geometry, "box")
    return geometry_to_message(geometry, "polygon")


def _query_prompt(shape: BaseGeometry, kind: str | None) -> cascade.Prompt | None:
    if shape.geom_type == "Point":
        return cascade.Prompt("point", shape)
    if kind == "box":
        return cascade.Prompt("box", box(*shape.bounds)) if shape.area > 0 else None
    polygon = _polygon_prompt(shape)
    return cascade.Prompt("polygon", polygon) if polygon is not None else None


def _task_record(task: PromptTask) -> TaskRecord:
    tile = task.tile
    return TaskRecord(
        id=task.task_id, scene_id=task.scene_id, window=(tile.col_off, tile.row_off, tile.width, tile.height),
        level=int(task.level), task=task.task, instruction=task.instruction, model_version=task.model_version,
        prompts=tuple(json_format.MessageToDict(p, preserving_proto_field_name=True) for p in task.prompts),
        chip_bucket=task.chip.bucket or None, chip_key=task.chip.key or None,
        parent_task_id=task.parent_task_id or None, aoi_id=task.aoi_id or None,
    )  # fmt: skip


def _parse_geojson(what: str, text: str) -> BaseGeometry:
    if not text.strip():
        raise PermanentError(f"{what}: no GeoJSON geometry")
    try:
        value = json.loads(text)
        geometry = shapely.geometry.shape(value.get("geometry", value) if isinstance(value, dict) else value)
    except (ValueError, TypeError, AttributeError, KeyError, IndexError, shapely.errors.GEOSException) as exc:
        raise PermanentError(f"{what}: invalid GeoJSON ({exc})") from exc
    _check_valid(what, geometry)
    lon_min, lat_min, lon_max, lat_max = geometry.bounds
    if not (-180 <= lon_min <= lon_max <= 180 and -90 <= lat_min <= lat_max <= 90):
        raise PermanentError(f"{what}: coordinates {geometry.bounds} are not lon/lat (EPSG:4326)")
    return geometry


def _check_valid(what: str, geometry: BaseGeometry) -> None:
    if geometry.is_empty:
        raise PermanentError(f"{what}: empty geometry")
    if not all(math.isfinite(v) for v in geometry.bounds):
        raise PermanentError(f"{what}: non-finite coordinates")
    if not geometry.is_valid:
        raise PermanentError(f"{what}: invalid geometry ({explain_validity(geometry)})")


def _query_geometry(event: QueryRequested) -> BaseGeometry:
    if event.geojson_4326:
        geometry = _parse_geojson(f"query {event.query_id}", event.geojson_4326)
        if not isinstance(geometry, Point | Polygon | MultiPolygon):
            raise PermanentError(f"query {event.query_id}: a Point, Polygon or MultiPolygon is needed, "
                                 f"got {geometry.geom_type}")  # fmt: skip
        return geometry
    if len(event.bbox_4326) == 4:
        west, south, east, north = event.bbox_4326
        if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
            raise PermanentError(f"query {event.query_id}: bbox {list(event.bbox_4326)} is not "
                                 "west < east, south < north in lon/lat")  # fmt: skip
        return box(west, south, east, north)
    raise PermanentError(f"query {event.query_id}: no prompt (geojson_4326, bbox_4326 or scene_id + scene_prompt)")
