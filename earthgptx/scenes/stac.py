"""The STAC item of a scene: ``rio-stac`` reads the COG (projection and raster extensions: CRS, shape, transform,
per-band statistics from an overview), ``pystac`` adds what the file cannot say.

- ``eo:bands`` for optical, multispectral and infrared scenes, named as sent, with the common name of each band
  (the canonical names are STAC's common names, except ``co``/``cross`` for SAR and ``tir``, ``nir08``, ... which
  are kept as they are);
- the ``sar`` extension for SAR scenes, with the polarisations when the band names state them (VV, VH, HH, HV);
- the geometry and bbox are the scene's own footprint (densified, split at the antimeridian), not rio-stac's;
- ``earthgptx:*`` properties: modality, georeference (and GCP count), product level, sensor, source, and any
  metadata the sender added.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pystac
from pystac.extensions.eo import EOExtension
from pystac.extensions.sar import SarExtension
from rio_stac.stac import create_stac_item
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

from earthgptx.scenes.cog import COG_MEDIA_TYPE
from earthgptx.scenes.validate import InspectedScene

__all__ = ["scene_stac_item"]

# STAC eo common names that differ from the processor's canonical ones.
_COMMON_NAMES = {"water_vapour": "wvp", "nir08": "nir08", "tir": "lwir"}
_EO_MODALITIES = frozenset({"optical", "multispectral", "infrared"})
_POLARISATIONS = frozenset({"HH", "HV", "VH", "VV"})


def _bbox(footprint: BaseGeometry) -> list[float]:
    if footprint.geom_type == "MultiPolygon":
        # A footprint split at the antimeridian: STAC's bbox then runs from the eastern part's west edge across
        # 180° to the western part's east edge (west > east), as RFC 7946 section 5.2 describes.
        parts = list(footprint.geoms)  # type: ignore[attr-defined]
        east_parts = [p for p in parts if p.bounds[0] >= 0]
        west_parts = [p for p in parts if p.bounds[0] < 0]
        if east_parts and west_parts:
            south = min(p.bounds[1] for p in parts)
            north = max(p.bounds[3] for p in parts)
            return [min(p.bounds[0] for p in east_parts), south, max(p.bounds[2] for p in west_parts), north]
    return list(footprint.bounds)


def scene_stac_item(
    cog_path: str,
    scene: InspectedScene,
    *,
    scene_id: str,
    footprint: BaseGeometry,
    asset_href: str,
    source: str,
) -> dict[str, Any]:
    """The scene's STAC item as a JSON object."""
    meta = scene.metadata
    properties: dict[str, Any] = {
        "earthgptx:modality": scene.modality,
        "earthgptx:georeference": scene.georeference,
        "earthgptx:source": source,
    }
    if scene.gcp_count:
        properties["earthgptx:gcp_count"] = scene.gcp_count
    if meta.product_level:
        properties["processing:level"] = meta.product_level
    if meta.sensor:
        properties["instruments"] = [meta.sensor]
    for key, value in sorted(meta.extra.items()):
        properties[f"earthgptx:{key}"] = value
    item = create_stac_item(
        cog_path,
        input_datetime=meta.acquired_at or dt.datetime.now(dt.UTC),
        id=scene_id,
        properties=properties,
        asset_name="data",
        asset_roles=["data"],
        asset_media_type=COG_MEDIA_TYPE,
        asset_href=asset_href,
        with_proj=True,
        with_raster=True,
        with_eo=False,
    )
    item.geometry = mapping(footprint)
    item.bbox = _bbox(footprint)
    if meta.acquired_at is None:
        # The acquisition time is unknown: STAC needs a datetime, so it says when the scene was received, and
        # says so.
        item.properties["earthgptx:datetime_is_reception"] = True
    asset = item.assets["data"]
    if scene.modality in _EO_MODALITIES:
        eo = EOExtension.ext(asset, add_if_missing=True)
        eo.bands = [
            pystac.extensions.eo.Band.create(
                name=info.name, common_name=_COMMON_NAMES.get(info.canonical, info.canonical),
                description=info.description,
            )
            for info in scene.band_info
        ]  # fmt: skip
    elif scene.modality == "sar":
        polarisations = [b.upper() for b in scene.bands if b.upper() in _POLARISATIONS]
        item.stac_extensions.append(SarExtension.get_schema_uri())
        if polarisations:
            item.properties["sar:polarizations"] = polarisations
        if meta.product_level:
            item.properties["sar:product_type"] = meta.product_level
    return item.to_dict(include_self_link=False)
