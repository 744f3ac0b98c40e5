"""The pipeline end to end on the real stack (issue 23): upload -> ingest -> promptgen -> inference (Triton) ->
resultstore -> promptgen ... -> rows in PostGIS, for each modality; AOIs and ad-hoc queries answered; re-delivery
on every topic changes nothing; two instances of promptgen and of inference share the work; bad input is
dead-lettered with its reason while the rest flows on.

One module-scoped run (``ran``) does the uploads and waits until the pipeline settles; the tests read what it left.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from kits.broker import read_topic, wait_until
from kits.scene_files import generated_scene
from shapely import wkb
from shapely.geometry import box, mapping

from earthgptx.bus import EventProducer
from earthgptx.geo import footprint_4326, from_lonlat
from earthgptx.geo.affine import apply_affine
from earthgptx.v1.events_pb2 import (
    PixelBox,
    PromptTask,
    QueryCoverage,
    QueryRequested,
    ResultStored,
    VisualPrompt,
)

from .conftest import Pipeline

pytestmark = [pytest.mark.kafka, pytest.mark.postgis, pytest.mark.minio, pytest.mark.triton, pytest.mark.slow]

MODALITIES = ("optical", "multispectral", "sar", "infrared")


@dataclass
class Scene:
    scene_id: str
    modality: str
    footprint: shapely.Polygon
    transform: Affine
    crs: str


@pytest.fixture(scope="module")
def ran(pipeline: Pipeline) -> dict[str, Scene]:
    files = {m: generated_scene(pipeline.folder, m, seed=40 + i, size=128) for i, m in enumerate(MODALITIES)}
    described = {}
    for modality, (path, _) in files.items():
        with rasterio.open(path) as src:
            described[modality] = (src.transform, src.crs.to_string(),
                                   footprint_4326(src.transform, src.crs.to_string(), src.width, src.height))  # fmt: skip
    # A standing query registered before the scene it covers arrives.
    area = box(*described["optical"][2].centroid.buffer(0.002).bounds)
    pipeline.publish("queries.requested", "aoi-1", QueryRequested(
        query_id="aoi-1", standing=True, instruction="Describe <region1>.", geojson_4326=json.dumps(mapping(area)),
        owner="test"))  # fmt: skip
    wait_until(lambda: pipeline.scalar("SELECT count(*) FROM aois") == 1, 120, "the AOI registered")
    scenes = {}
    for modality, (path, bands) in files.items():
        transform, crs, footprint = described[modality]
        scenes[modality] = Scene(pipeline.upload(path, modality, bands), modality, footprint, transform, crs)
    point = scenes["sar"].footprint.centroid
    pipeline.publish("queries.requested", "q-point", QueryRequested(
        query_id="q-point", instruction="What is the object in <region1>?", geojson_4326=json.dumps(mapping(point)),
        coverage=QueryCoverage.QUERY_COVERAGE_NEWEST))  # fmt: skip
    pipeline.publish("queries.requested", "q-nowhere", QueryRequested(
        query_id="q-nowhere", instruction="What is here?", bbox_4326=[-40.0, -70.0, -39.9, -69.9]))  # fmt: skip
    pipeline.quiet()
    return scenes


def test_every_modality_gets_answers_and_the_cascade_goes_deeper(pipeline: Pipeline, ran: dict[str, Scene]) -> None:
    for scene in ran.values():
        levels = {r.level for r in pipeline.rows(
            "SELECT DISTINCT t.level FROM tasks AS t JOIN results AS r ON r.task_id = t.id WHERE t.scene_id = :s",
            s=scene.scene_id)}  # fmt: skip
        assert 1 in levels, scene.modality
    # Where L1 counted something, L2 grounded it, and each grounded object was asked its attributes.
    counted = pipeline.scalar(
        "SELECT count(*) FROM results AS r JOIN tasks AS t ON t.id = r.task_id "
        "WHERE t.task = 'counting' AND t.aoi_id IS NULL AND (r.attributes->>'count')::int > 0")
    grounding = pipeline.scalar("SELECT count(*) FROM tasks WHERE task = 'grounding'")
    assert grounding == counted
    objects = pipeline.scalar("SELECT count(*) FROM results AS r JOIN tasks AS t ON t.id = r.task_id "
                              "WHERE t.task = 'grounding' AND r.pixel_geom IS NOT NULL AND "
                              "GeometryType(r.pixel_geom) = 'POLYGON'")  # fmt: skip
    if objects:
        assert pipeline.scalar("SELECT count(*) FROM tasks WHERE level = 3") > 0
    multi = pipeline.scalar(
        "SELECT count(*) FROM (SELECT t.scene_id, t.tile_col_off, t.tile_row_off FROM results AS r "
        "JOIN tasks AS t ON t.id = r.task_id WHERE t.task = 'grounding' GROUP BY 1, 2, 3 HAVING count(*) >= 2) AS x")
    assert (pipeline.scalar("SELECT count(*) FROM tasks WHERE level = 4") > 0) == (multi > 0)
    # every task got its answer, and nothing pending anywhere
    assert pipeline.scalar("SELECT count(*) FROM tasks AS t WHERE NOT EXISTS "
                           "(SELECT 1 FROM results AS r WHERE r.task_id = t.id)") == 0  # fmt: skip


def test_stored_geometry_lies_in_the_footprint_and_maps_back_within_half_a_pixel(
    pipeline: Pipeline, ran: dict[str, Scene]
) -> None:
    for scene in ran.values():
        rows = pipeline.rows("SELECT ST_AsBinary(geom) AS g, ST_AsBinary(pixel_geom) AS p FROM results "
                             "WHERE scene_id = :s AND geom IS NOT NULL", s=scene.scene_id)  # fmt: skip
        assert rows
        for row in rows:
            geom, pixels = wkb.loads(bytes(row.g)), wkb.loads(bytes(row.p))
            # Every vertex lies in the footprint (a chip's straight edges between projected corners may bow out
            # of the densified footprint by the projection's curvature; the vertices themselves may not).
            vertices = shapely.points(shapely.get_coordinates(geom))
            assert all(scene.footprint.buffer(1e-7).covers(v) for v in vertices), scene.modality
            back = apply_affine(~scene.transform, from_lonlat(geom, scene.crs))
            a = np.asarray(shapely.get_coordinates(back))
            b = np.asarray(shapely.get_coordinates(pixels))
            assert a.shape == b.shape and float(np.abs(a - b).max()) <= 0.5, scene.modality


def test_the_aoi_and_the_ad_hoc_queries_are_answered(pipeline: Pipeline, ran: dict[str, Scene]) -> None:
    aoi = pipeline.rows("SELECT scene_id, answer_text FROM v_aoi_answers WHERE aoi_id = 'aoi-1'")
    assert aoi and {r.scene_id for r in aoi} == {ran["optical"].scene_id} and all(r.answer_text for r in aoi)
    assert pipeline.scalar("SELECT status FROM queries WHERE id = 'q-point'") == "answered"
    answers = pipeline.rows("SELECT scene_id, answer_text FROM v_query_answers WHERE query_id = 'q-point'")
    assert answers and {r.scene_id for r in answers} == {ran["sar"].scene_id} and all(r.answer_text for r in answers)
    row = pipeline.rows("SELECT status, reason FROM queries WHERE id = 'q-nowhere'")[0]
    assert row.status == "no_coverage" and "no scene" in row.reason


def test_two_instances_of_promptgen_and_inference_share_the_work(pipeline: Pipeline, ran: dict[str, Scene]) -> None:
    for name in ("promptgen", "inference"):
        for instance in (0, 1):
            assert "partitions assigned [TopicPartition" in pipeline.log(f"{name}-{instance}"), f"{name}-{instance}"
    # Nothing done twice in effect: every task published was stored once, with one result set.
    published = read_topic(pipeline.kafka, pipeline.topic("prompts.tasks"), 10_000, timeout_s=3)
    ids = {PromptTask.FromString(r.value).task_id for r in published}
    assert ids == {r.id for r in pipeline.rows("SELECT id FROM tasks")}
    assert pipeline.scalar("SELECT count(*) FROM (SELECT task_id, ordinal FROM results GROUP BY 1, 2 "
                           "HAVING count(*) > 1) AS d") == 0  # fmt: skip


def test_redelivery_on_every_topic_leaves_no_duplicate(pipeline: Pipeline, ran: dict[str, Scene]) -> None:
    def snapshot() -> tuple[int, ...]:
        return tuple(pipeline.scalar(sql) for sql in (
            "SELECT count(*) FROM tasks", "SELECT count(*) FROM results", "SELECT count(*) FROM queries",
            "SELECT count(*) FROM aois", "SELECT count(*) FROM scenes", "SELECT count(*) FROM v_objects",
            "SELECT max(updated_at)::text FROM results"))  # fmt: skip

    before = snapshot()
    with EventProducer(pipeline.kafka, client_id=f"redeliver-{pipeline.suffix}") as producer:
        for topic in ("scenes.ingested", "prompts.tasks", "inference.results", "results.stored", "queries.requested"):
            records = read_topic(pipeline.kafka, pipeline.topic(topic), 10_000, timeout_s=3)
            assert records, topic
            for record in records[:6]:  # a sample of each topic: every kind of event, delivered again
                producer.send_raw(pipeline.topic(topic), record.key, record.value)
        producer.flush()
    pipeline.quiet()
    assert snapshot() == before


@pytest.mark.parametrize(
    ("key", "event", "reason"),
    [
        ("aoi-bad", QueryRequested(query_id="aoi-bad", standing=True, instruction="x", geojson_4326='{"type": "Poly'),
         "invalid GeoJSON"),
        ("q-bowtie", QueryRequested(query_id="q-bowtie", instruction="x", geojson_4326=json.dumps(
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]})), "Self-intersection"),
        ("unknown", ResultStored(task_id="no-such-task", scene_id="no-such-scene"), "unknown task"),
    ],
)  # fmt: skip
def test_bad_input_is_dead_lettered_with_its_reason_and_the_rest_flows_on(
    pipeline: Pipeline, ran: dict[str, Scene], key: str, event: QueryRequested | ResultStored, reason: str
) -> None:
    topic = "results.stored" if isinstance(event, ResultStored) else "queries.requested"
    pipeline.publish(topic, key, event)
    group = pipeline.group("promptgen")
    wait_until(lambda: any(reason in r for r in pipeline.dead_letter_reasons(group)), 120, f"dead letter {reason!r}")


def test_a_prompt_outside_its_scene_is_dead_lettered_and_a_good_query_still_answered(
    pipeline: Pipeline, ran: dict[str, Scene]
) -> None:
    scene = ran["multispectral"]
    pipeline.publish("queries.requested", scene.scene_id, QueryRequested(
        query_id="q-outside", instruction="x", scene_id=scene.scene_id,
        scene_prompt=VisualPrompt(box=PixelBox(x1=100, y1=100, x2=300, y2=200))))  # fmt: skip
    pipeline.publish("queries.requested", scene.scene_id, QueryRequested(
        query_id="q-inside", instruction="Describe <region1>.", scene_id=scene.scene_id,
        scene_prompt=VisualPrompt(box=PixelBox(x1=20, y1=20, x2=60, y2=60))))  # fmt: skip
    group = pipeline.group("promptgen")
    wait_until(lambda: any("outside" in r for r in pipeline.dead_letter_reasons(group)), 120, "the dead letter")
    wait_until(lambda: pipeline.scalar("SELECT status FROM queries WHERE id = 'q-inside'") == "answered", 300,
               "the good query answered")  # fmt: skip


def test_logs_are_clean_of_unhandled_errors(pipeline: Pipeline, ran: dict[str, Scene]) -> None:
    for name in pipeline.processes:
        for line in pipeline.log(name).splitlines():
            if line.startswith("{"):
                assert json.loads(line).get("level") != "CRITICAL", (name, line)

