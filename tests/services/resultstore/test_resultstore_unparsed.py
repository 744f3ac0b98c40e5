"""Unparsed answers: the resultstore stores them as text with the flag and the reason (no geometry answered), and
the chip's no-data share; the columns exist in PostGIS (migration 0006) and the answer views show them."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from earthgptx.bus import PermanentError
from earthgptx.geo import footprint_4326
from earthgptx.store.db import make_engine
from earthgptx.store.records import SceneRecord
from earthgptx.store.repository import Repository
from earthgptx.v1.events_pb2 import Answer, DetectedBox, PixelBox
from services.resultstore.handlers import result_records
from tests.services.resultstore.test_resultstore_handlers import (
    SCENE_TRANSFORM,
    UTM_33N,
    grounding_result,
    handler,
)

FAILURE = "malformed box '[78, 312, 234, 156]': box [78, 312, 234, 156] has y2 <= y1"


def unparsed_result(**changes: Any) -> Any:
    fields: dict[str, Any] = {
        "answer": Answer(text="ship [78, 312, 234, 156]"),
        "answer_parsed": False,
        "parse_failure": FAILURE,
        "nodata_fraction": 0.25,
    }
    fields.update(changes)
    return grounding_result(**fields)


def test_an_unparsed_answer_is_one_text_row_with_the_flag_and_reason() -> None:
    store, repository, publisher = handler()
    store.on_inference_result(unparsed_result())
    [row] = repository.results.values()
    assert (row.answer_text, row.answer_parsed, row.parse_failure) == (
        "ship [78, 312, 234, 156]",
        False,
        FAILURE,
    )
    assert row.label is None and row.nodata_fraction == 0.25
    [(_, _, stored)] = publisher.published
    assert not stored.objects and stored.object_count == 0  # nothing for the next level to prompt with


def test_parsed_and_legacy_answers_are_stored_as_parsed() -> None:
    parsed = result_records(grounding_result(answer_parsed=True, nodata_fraction=0.5), "task-1")
    legacy = result_records(grounding_result(), "task-1")  # a producer from before the flag
    for rows in (parsed, legacy):
        assert len(rows) == 2 and all(r.answer_parsed and r.parse_failure is None for r in rows)
    assert {r.nodata_fraction for r in parsed} == {0.5} and {r.nodata_fraction for r in legacy} == {0.0}
    # Unparsed without a reason (a producer's bug) still says that it did not parse.
    [row] = result_records(unparsed_result(parse_failure=""), "task-1")
    assert row.parse_failure == "unparsed answer"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"answer": Answer(text="x", boxes=[DetectedBox(box=PixelBox(x1=1, y1=2, x2=3, y2=4))])},
         "unparsed answer carries boxes"),
        ({"nodata_fraction": 1.0}, "nodata_fraction 1.0 is not in [0, 1)"),
        ({"parse_failure": "bad\x00"}, "parse failure contains a NUL character"),
    ],
)  # fmt: skip
def test_inconsistent_unparsed_results_are_refused_with_the_reason(
    change: dict[str, Any], reason: str
) -> None:
    store, repository, _ = handler()
    with pytest.raises(PermanentError, match=re.escape(reason)):
        store.on_inference_result(unparsed_result(**change))
    assert not repository.results


@pytest.mark.postgis
def test_the_flag_is_stored_in_postgis_and_shown_by_the_answer_views(migrated_db_url: str) -> None:
    scene_id, query_id = f"scene-{uuid.uuid4().hex[:8]}", f"query-{uuid.uuid4().hex[:8]}"
    size = 1024
    repository = Repository(make_engine(url=migrated_db_url, pool_size=1))
    try:
        repository.upsert_scene(SceneRecord(
            id=scene_id, source="test", modality="optical", bands=("red", "green", "blue"), dtype="uint8",
            width=size, height=size, object_bucket="scenes", object_key=f"{scene_id}.tif",
            footprint=footprint_4326(SCENE_TRANSFORM, UTM_33N, size, size), crs=UTM_33N,
            transform=tuple(SCENE_TRANSFORM)[:6],  # type: ignore[arg-type]
        ))  # fmt: skip
        store, _, _ = handler(repository)  # type: ignore[arg-type]
        bad = unparsed_result(task_id=f"{scene_id}-bad", scene_id=scene_id)
        good = grounding_result(task_id=f"{scene_id}-good", scene_id=scene_id, answer_parsed=True)
        store.on_inference_results([bad, good])
        engine = sa.create_engine(migrated_db_url)
        with engine.begin() as connection:
            rows = connection.execute(
                sa.text("SELECT task_id, ordinal, answer_parsed, parse_failure, nodata_fraction, answer_text "
                        "FROM results WHERE scene_id = :s ORDER BY task_id, ordinal"), {"s": scene_id}
            ).all()  # fmt: skip
            assert rows == [
                (f"{scene_id}-bad", 0, False, FAILURE, 0.25, "ship [78, 312, 234, 156]"),
                (f"{scene_id}-good", 0, True, None, 0.0, "[78, 156, 234, 312]"),
                (f"{scene_id}-good", 1, True, None, 0.0, "[78, 156, 234, 312]"),
            ]
            connection.execute(
                sa.text("INSERT INTO queries (id, instruction, task_ids) VALUES (:q, 'Find ships.', :t)"),
                {"q": query_id, "t": [f"{scene_id}-bad"]},
            )
            view = connection.execute(
                sa.text("SELECT task_id, answer_text, answer_parsed, parse_failure FROM v_query_answers "
                        "WHERE query_id = :q"), {"q": query_id}
            ).all()  # fmt: skip
            assert view == [(f"{scene_id}-bad", "ship [78, 312, 234, 156]", False, FAILURE)]
            # The database itself refuses an unparsed row without its reason.
            with pytest.raises(sa.exc.IntegrityError, match="ck_results_unparsed_has_reason"):
                with connection.begin_nested():
                    connection.execute(
                        sa.text("UPDATE results SET parse_failure = NULL WHERE task_id = :t"),
                        {"t": f"{scene_id}-bad"},
                    )
            connection.execute(sa.text("DELETE FROM queries WHERE id = :q"), {"q": query_id})
        engine.dispose()
    finally:
        with repository.engine.begin() as connection:
            connection.execute(sa.text("DELETE FROM scenes WHERE id = :s"), {"s": scene_id})
        repository.close()
