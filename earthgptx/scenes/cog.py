"""Writing the Cloud-Optimized GeoTIFF of a scene with ``rio-cogeo``.

rio-cogeo copies the source window by window into a temporary tiled file, builds the overviews there (GDAL,
internal), then copies it with the overviews in front (``COPY_SRC_OVERVIEWS``): memory stays near GDAL's block
cache (``cache_mb``), whatever the scene's size. The profile is rio-cogeo's ``deflate`` (512 px internal tiles),
with the horizontal predictor for integer data; overviews are averaged, so a zoomed-out view keeps the radiometry
of the scene rather than a sample of it. The result is checked with ``cog_validate``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT
from rio_cogeo.cogeo import cog_translate, cog_validate
from rio_cogeo.profiles import cog_profiles

from earthgptx.scenes.errors import SceneRejected

__all__ = ["COG_MEDIA_TYPE", "write_cog"]

log = logging.getLogger(__name__)

COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"


def write_cog(
    source: DatasetReader | WarpedVRT,
    destination: str | Path,
    *,
    blocksize: int = 512,
    threads: str = "ALL_CPUS",
    cache_mb: int = 256,
) -> None:
    """Write ``source`` as a COG at ``destination``; ``SceneRejected`` when its pixels cannot be read."""
    profile = cog_profiles.get("deflate")
    profile.update(blockxsize=blocksize, blockysize=blocksize)
    if np.dtype(source.dtypes[0]).kind in "iu":
        profile["predictor"] = 2
    # In bytes: rasterio hands GDAL_CACHEMAX to GDALSetCacheMax64, which keeps it for the whole process (a bare
    # 256 would mean 256 bytes, and every later read would crawl).
    config = {
        "GDAL_NUM_THREADS": threads,
        "GDAL_CACHEMAX": cache_mb * 1024 * 1024,
        "GDAL_TIFF_OVR_BLOCKSIZE": str(blocksize),
    }
    try:
        cog_translate(
            source,
            str(destination),
            profile,
            in_memory=False,
            overview_resampling="average",
            forward_band_tags=True,
            config=config,
            quiet=True,
        )
    except RasterioError as exc:
        message = str(exc).replace(str(source.name), "the file")
        raise SceneRejected(f"pixels cannot be read (truncated or corrupt file): {message}") from exc
    valid, errors, warnings = cog_validate(str(destination), quiet=True)
    if not valid:
        raise RuntimeError(f"rio-cogeo wrote an invalid COG: {errors}")
    if warnings:
        log.debug("COG warnings: %s", warnings)
