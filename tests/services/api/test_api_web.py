"""The web map in a real browser (Playwright driving Debian's chromium through ``executable_path``): it loads
from the API, shows the scene's imagery and footprint and the stored results from Martin's tiles, a click on a
result shows its answer, a box drawn on the map with an instruction becomes a query, and the answer appears.

No inference runs in this test: when the query reaches ``queries.requested``, the test stores its answer the way
the pipeline would (promptgen's ``queries`` row with its task, the resultstore's task and result rows, through
the real tables), and the page must find it by itself. Screenshots go to ``tests/artifacts/`` (git-ignored).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from conftest import REPO, RunningApi, api_settings, put_cog, seed_results, seed_scene, serve
from kits.broker import delete_leftovers, read_topic, record_count, wait_until

from earthgptx.events import decode_event
from earthgptx.store.db import make_engine
from earthgptx.store.objects import ObjectStore
from earthgptx.store.repository import Repository
from earthgptx.v1.events_pb2 import QueryRequested
from services.api.security import KeyStore

pytestmark = [pytest.mark.postgis, pytest.mark.kafka, pytest.mark.minio, pytest.mark.slow]

ARTIFACTS = REPO / "tests" / "artifacts"
WEB = REPO / "web" / "dist"
BOUNDS = (12.0, 41.0, 12.2, 41.2)
CHROMIUM = os.environ.get("EGX_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")


@pytest.fixture(scope="module")
def map_api(migrated_db_url: str, object_store: ObjectStore, martin: str) -> Iterator[RunningApi]:
    if not (WEB / "index.html").is_file():
        pytest.fail("the web map is not built: run `make web`")
    unique = uuid.uuid4().hex[:10]
    settings = api_settings(migrated_db_url, object_store, unique, martin_url=martin, web_dir=WEB)
    server, thread = serve(settings)
    engine = make_engine(url=migrated_db_url)
    keys = KeyStore(engine)
    try:
        yield RunningApi(
            settings, f"http://127.0.0.1:{settings.port}", engine, Repository(engine), keys,
            keys.create(f"map-user-{unique}").token, "",
        )  # fmt: skip
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        engine.dispose()
        delete_leftovers(settings.kafka, unique)


def _answer_like_the_pipeline(api: RunningApi, query: QueryRequested, scene_id: str) -> None:
    """promptgen's query row and task, the resultstore's result: what the page reads back."""
    west, south, east, north = query.bbox_4326
    task = seed_results(
        api.repository, scene_id, [(west + (east - west) * 0.3, south + (north - south) * 0.3,
                                    west + (east - west) * 0.6, south + (north - south) * 0.6)],
        level=2, label="harbour", answer="a harbour with two piers",
    )  # fmt: skip
    with api.engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO queries (id, instruction, owner, geom, status, task_ids, answered_at) VALUES "
                "(:id, :instruction, :owner, ST_MakeEnvelope(:w, :s, :e, :n, 4326), 'answered', :tasks, now())"
            ),
            {"id": query.query_id, "instruction": query.instruction, "owner": query.owner,
             "w": west, "s": south, "e": east, "n": north, "tasks": [task]},
        )  # fmt: skip


def test_map_shows_results_and_answers_a_drawn_box(map_api: RunningApi, object_store: ObjectStore) -> None:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    key = f"cogs/{uuid.uuid4().hex}.tif"
    put_cog(object_store, key, BOUNDS)
    scene = seed_scene(map_api.repository, BOUNDS, object_key=key, bucket=object_store.settings.scenes_bucket)
    seed_results(map_api.repository, scene, [(12.03, 41.03, 12.06, 41.05), (12.12, 41.12, 12.15, 41.16)], label="ship",
                 answer="a cargo ship")  # fmt: skip
    seed_results(map_api.repository, scene, [(12.08, 41.02, 12.1, 41.04)], level=3, label="vehicle",
                 answer="a white truck")  # fmt: skip
    topic = map_api.settings.queries_topic
    before = record_count(map_api.settings.kafka, topic)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage",
                  "--use-angle=swiftshader", "--enable-unsafe-swiftshader"],
        )  # fmt: skip
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.add_init_script(f"window.localStorage.setItem('egx-api-key', {map_api.writer_token!r})")
        outside = []
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith((map_api.url, "data:", "blob:")) else None)
        imagery: list[str] = []
        page.on(
            "response",
            lambda r: imagery.append(r.url)
            if "/imagery/tiles/" in r.url and r.status == 200 and r.headers.get("content-type") == "image/png"
            else None,
        )
        console: list[str] = []
        page.on("console", lambda m: console.append(m.text))
        page.on("pageerror", lambda e: console.append(str(e)))
        page.goto(map_api.url)
        page.wait_for_selector("body[data-ready=true]", timeout=60_000)

        # Footprint, imagery and results are drawn (rendered features of each layer).
        rendered = "(layers) => window.egxMap.queryRenderedFeatures({layers}).length"
        def drawn(layers: list[str], at_least: int) -> None:
            try:
                page.wait_for_function(f"() => ({rendered})({layers!r}) >= {at_least}", timeout=30_000)
            except Exception as exc:
                page.screenshot(path=str(ARTIFACTS / "web-map-failed.png"))
                raise AssertionError(f"{layers} not drawn; the page's console: {console[-10:]}") from exc

        drawn(["scene-footprints"], 1)
        drawn(["result-fill", "result-points"], 3)
        page.wait_for_function(f"() => !!window.egxMap.getLayer('imagery-{scene}')", timeout=30_000)
        # Playwright's sync API hands events to their handlers only while one of its calls runs, so the wait pumps
        # them (page.wait_for_timeout) instead of sleeping: a plain polling loop never sees a tile that arrives later.
        deadline = time.monotonic() + 60
        while not imagery:
            assert time.monotonic() < deadline, "timed out after 60s waiting for an imagery tile of the scene"
            page.wait_for_timeout(250)
        page.wait_for_timeout(1000)  # let the map paint what it received before the screenshot
        page.screenshot(path=str(ARTIFACTS / "web-map-results.png"))

        # Clicking a result shows its answer, level, scene and model version.
        x, y = page.evaluate("() => { const p = window.egxMap.project([12.045, 41.04]); return [p.x, p.y]; }")
        box = page.locator("#map").bounding_box()
        assert box is not None
        page.mouse.click(box["x"] + x, box["y"] + y)
        page.wait_for_selector("#details dd[data-field=answer]", timeout=10_000)
        assert page.inner_text("#details dd[data-field=answer]") == "a cargo ship"
        assert page.inner_text("#details dd[data-field=scene]") == scene
        assert page.inner_text("#details dd[data-field=model]") == "tiny-test"

        # Draw a box, ask, and read the answer on the page.
        page.click("#tool-box")
        corners = page.evaluate(
            "() => [[12.02, 41.18], [12.09, 41.11]].map((c) => { const p = window.egxMap.project(c); return [p.x, p.y]; })"
        )
        page.mouse.move(box["x"] + corners[0][0], box["y"] + corners[0][1])
        page.mouse.down()
        page.mouse.move(box["x"] + corners[1][0], box["y"] + corners[1][1], steps=8)
        page.mouse.up()
        page.fill("#instruction", "What is in <region1>?")
        page.click("#ask")
        page.wait_for_selector("#answer p", timeout=30_000)

        wait_until(lambda: record_count(map_api.settings.kafka, topic) > before, 30, "the query on its topic")
        events = [decode_event(QueryRequested, r.value) for r in read_topic(map_api.settings.kafka, topic, before + 1)]
        (query,) = [e for e in events if e.instruction == "What is in <region1>?"]  # the module's own topic
        assert len(query.bbox_4326) == 4 and query.owner.startswith("map-user-")
        west, south, east, north = query.bbox_4326
        assert 12.0 < west < east < 12.1 and 41.1 < south < north < 41.19
        _answer_like_the_pipeline(map_api, query, scene)

        page.wait_for_selector("#answer .answer", timeout=60_000)
        assert "a harbour with two piers" in page.inner_text("#answer")
        assert page.inner_text("#status") == "answered"
        page.screenshot(path=str(ARTIFACTS / "web-map-answer.png"))
        browser.close()
    assert not outside, f"the page reached outside the API: {outside[:5]}"
