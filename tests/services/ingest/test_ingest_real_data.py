"""Real GeoTIFFs (the samples a PyPI package ships, unpacked by deploy/local/samples.sh) through the HTTP API."""

from __future__ import annotations

import json

import pytest
from conftest import RunningIngest
from kits.scene_files import sample_geotiff
from shapely.geometry import shape

pytestmark = [pytest.mark.postgis, pytest.mark.minio, pytest.mark.kafka]


@pytest.mark.parametrize(
    ("name", "where"),
    [
        ("bahamas_rgb.tif", (-78.2, 24.9)),  # UTM 18N, the Bahamas
        ("landsat7.tif", (-122.3, 37.8)),  # Web Mercator, San Francisco Bay
    ],
)
def test_real_rgb_samples_are_ingested(ingest_service: RunningIngest, name: str, where: tuple[float, float]) -> None:
    path = sample_geotiff(name)
    with ingest_service.client() as client:
        response = client.post(
            "/v1/scenes", content=path.read_bytes(), headers={"Content-Type": "image/tiff"},
            params={"modality": "optical", "bands": "red,green,blue", "sensor": "Landsat", "source": "samples"},
        )  # fmt: skip
    assert response.status_code == 202, response.text
    scene_id = response.json()["scene_id"]
    assert ingest_service.wait_for_status(scene_id)["status"] == "ingested"
    event = next(e for e in ingest_service.events() if e.scene_id == scene_id)
    footprint = shape(json.loads(event.footprint.geojson))
    west, south, east, north = footprint.bounds
    assert west - 1 < where[0] < east + 1 and south - 1 < where[1] < north + 1, footprint.bounds


def test_real_seven_band_landsat_is_refused_as_multispectral(ingest_service: RunningIngest) -> None:
    # Landsat ETM+ bands B1..B7 include the thermal B6, which no multispectral slot takes: the reason says so.
    path = sample_geotiff("landsat.tif")
    with ingest_service.client() as client:
        response = client.post("/v1/scenes", content=path.read_bytes(), headers={"Content-Type": "image/tiff"},
                               params={"modality": "multispectral"})  # fmt: skip
    assert response.status_code == 422
    assert "unknown multispectral band 'B6_VCID_2'" in response.json()["reason"]
