"""Scene imagery as XYZ tiles: titiler's tiler (``/imagery/...``, any rendering a client asks for, reading the
scene's COG from MinIO through GDAL's S3 driver) and ``GET /v1/scenes/{id}/tiles/{z}/{x}/{y}.png``, which sends
the client to it with the scene's default rendering for its modality (``default_rendering``):

- optical: true colour (red, green, blue);
- multispectral: false colour (NIR, red, green), vegetation in red;
- SAR: backscatter in dB (10·log10 of intensity), -25..5 dB in grey;
- infrared/thermal: the first band with the ``inferno`` colour map.
"""

from __future__ import annotations

import math
import os
from typing import Annotated, Any
from urllib.parse import urlencode

import morecantile
import numpy as np
import sqlalchemy as sa
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool
from titiler.core.factory import TilerFactory

from earthgptx.settings import ObjectStoreSettings
from earthgptx.store.models import Scene
from services.api.deps import Reader, ResourcesDep
from services.api.errors import Invalid, NotFound

router = APIRouter(tags=["imagery"])

# Display ranges per data type: 8-bit counts, reflectance scaled by 10 000, reflectance as a fraction.
_RANGES = {"uint8": "0,255", "uint16": "0,3000", "int16": "0,3000"}
_FLOAT_RANGE = "0,0.3"


def _band(bands: list[str], *names: str) -> int | None:
    lowered = [b.lower() for b in bands]
    for name in names:
        if name in lowered:
            return lowered.index(name) + 1
    return None


def default_rendering(modality: str, bands: list[str], dtype: str) -> list[tuple[str, str]]:
    """titiler query parameters that show a scene of this modality the way analysts expect."""
    span = _RANGES.get(dtype, _FLOAT_RANGE)
    count = len(bands)
    if modality == "sar":
        return [("expression", "10*log10(b1)"), ("rescale", "-25,5")]
    if modality == "infrared":
        return [("bidx", "1"), ("rescale", span), ("colormap_name", "inferno")]
    if modality == "multispectral":
        wanted = [_band(bands, "nir", "b08", "b8"), _band(bands, "red", "b04", "b4"), _band(bands, "green", "b03")]
    else:
        wanted = [_band(bands, "red", "r"), _band(bands, "green", "g"), _band(bands, "blue", "b")]
    if None in wanted:
        wanted = list(range(1, min(count, 3) + 1)) if count >= 3 else [1]
    return [*(("bidx", str(i)) for i in wanted), ("rescale", span)]


def _scene(resources: Any, scene_id: str) -> Any:
    footprint = Scene.footprint
    query = sa.select(
        Scene.modality, Scene.bands, Scene.dtype, Scene.object_bucket, Scene.object_key,
        (sa.func.ST_XMax(footprint) - sa.func.ST_XMin(footprint)).label("width_deg"),
    ).where(Scene.id == scene_id)  # fmt: skip
    with resources.engine.connect() as connection:
        row = connection.execute(query).first()
    if row is None:
        raise NotFound(f"no scene {scene_id}")
    return row


SCENE_ID = r"^[A-Za-z0-9._-]{1,128}$"
# Tiles up to this many times as wide as the scene are served (a 10 km scene from z7 on). Without overviews
# (a small scene has none) the cost grows with the square of it: 0.24 s for a tile 19 times as wide as a
# 256-px scene, 1.1 s at 39, 4 s at 78, minutes at 2,500 (rio-tiler, one process, load average 12).
MAX_TILE_OVER_SCENE = 32


async def scene_url(request: Request, scene: Annotated[str, Query(description="scene id", pattern=SCENE_ID)]) -> str:
    """titiler's dataset: the scene's COG as GDAL reads it (``s3://bucket/key``)."""
    row = await run_in_threadpool(_scene, request.app.state.resources, scene)
    _check_nodata(request.query_params.get("nodata"), row.dtype)
    _check_point(request)
    _check_zoom(request, row.width_deg)
    return f"s3://{row.object_bucket}/{row.object_key}"


def _check_point(request: Request) -> None:
    """A point in lon/lat (titiler's default ``coord_crs``) lies on the globe; PROJ fails with a 500 elsewhere."""
    if "lon" not in request.path_params or request.query_params.get("coord_crs") not in (None, "", "EPSG:4326"):
        return
    lon, lat = float(request.path_params["lon"]), float(request.path_params["lat"])
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise Invalid(f"the point ({lon}, {lat}) is not a longitude and latitude")


def _check_zoom(request: Request, scene_width_deg: float | None) -> None:
    """A tile far wider than the scene is refused (404, as a tile outside it): GDAL would warp the whole tile
    extent at the scene's resolution (a minute or more for one z1 tile of a 2.5 km scene; found by
    test_api_schema.py), and a map shows nothing of the scene at that zoom anyway."""
    params = request.path_params
    if "z" not in params or "tileMatrixSetId" not in params or not scene_width_deg:
        return
    try:
        tms = morecantile.tms.get(params["tileMatrixSetId"])
        west, _, east, _ = tms.bounds(morecantile.Tile(int(params["x"]), int(params["y"]), int(params["z"])))
    except Exception:  # an unknown matrix set or index: titiler refuses it itself, with its own reason
        return
    if east - west > MAX_TILE_OVER_SCENE * scene_width_deg:
        raise NotFound(
            f"zoom level {params['z']} is too far out for this scene (a tile {east - west:.3g} degrees wide, the "
            f"scene {scene_width_deg:.3g}); zoom in"
        )


def _check_nodata(nodata: str | None, dtype: str) -> None:
    """A ``nodata`` the scene's data type can hold (or ``nan`` for floats); rio-tiler fails with a 500 on others."""
    if nodata is None:
        return
    try:
        value = float(nodata)
    except ValueError:
        raise Invalid(f"nodata must be a number, got {nodata!r}") from None
    kind = np.dtype(dtype)
    if math.isnan(value) and kind.kind == "f":
        return
    limits = np.iinfo(kind) if kind.kind in "iu" else np.finfo(kind)
    if not (math.isfinite(value) and limits.min <= value <= limits.max):
        raise Invalid(f"nodata {nodata} does not fit the scene's data type {dtype}")


def use_object_store_credentials(objects: ObjectStoreSettings) -> None:
    """Give GDAL's S3 driver the object store's credentials. rasterio refuses AWS credentials as ``Env``
    options, so they go where GDAL reads them itself: this process's environment (once, at start)."""
    os.environ["AWS_ACCESS_KEY_ID"] = objects.access_key.get_secret_value()
    os.environ["AWS_SECRET_ACCESS_KEY"] = objects.secret_key.get_secret_value()


def gdal_environment(request: Request) -> dict[str, Any]:
    """GDAL's S3 driver pointed at the object store (path-style addressing, as MinIO serves it)."""
    objects = request.app.state.resources.settings.objects
    return {
        "AWS_S3_ENDPOINT": objects.endpoint,
        "AWS_HTTPS": "YES" if objects.secure else "NO",
        "AWS_VIRTUAL_HOSTING": "FALSE",
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff",
    }


def tiler() -> TilerFactory:
    return TilerFactory(
        path_dependency=scene_url,
        environment_dependency=gdal_environment,
        router_prefix="/imagery",
        add_preview=False,
        add_part=False,
        add_viewer=False,
    )


@router.get("/v1/scenes/{scene_id}/tiles/{z}/{x}/{y}.png", status_code=307, response_class=RedirectResponse)
async def scene_tile(
    scene_id: Annotated[str, Path(pattern=SCENE_ID)],
    z: Annotated[int, Path(ge=0, le=24)],
    x: Annotated[int, Path(ge=0)],
    y: Annotated[int, Path(ge=0)],
    who: Reader,
    resources: ResourcesDep,
) -> RedirectResponse:
    row = await run_in_threadpool(_scene, resources, scene_id)
    params = [("scene", scene_id), *default_rendering(row.modality, list(row.bands), row.dtype)]
    return RedirectResponse(f"/imagery/tiles/WebMercatorQuad/{z}/{x}/{y}.png?{urlencode(params)}", status_code=307)
