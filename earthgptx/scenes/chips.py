"""Model-size chips cut from a scene by windowed reads, each a small GeoTIFF with its own transform and CRS.

``read_chip`` reads one tile's window (only that window: never the whole raster) resampled to the chip size;
``chip_geotiff`` writes the pixels as a GeoTIFF (deflate) whose transform is the tile's chip transform and whose
CRS is the scene's, so any GIS tool places it, and ``chip_key`` names it in the chips bucket. The same tile
always gives the same key, so writing a chip again is harmless.
"""

from __future__ import annotations

import numpy as np
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.io import DatasetReader, MemoryFile
from rasterio.windows import Window

from earthgptx.geo import affine_from_message, is_georeferenced
from earthgptx.v1.events_pb2 import TileWindow

__all__ = ["CHIP_MEDIA_TYPE", "chip_geotiff", "chip_key", "read_chip"]

CHIP_MEDIA_TYPE = "image/tiff; application=geotiff"


def chip_key(scene_id: str, tile: TileWindow) -> str:
    """Object key of a tile's chip: the window and chip size are part of it, so another tiling never collides."""
    return (
        f"{scene_id}/{tile.col_off}_{tile.row_off}_{tile.width}x{tile.height}"
        f"_{tile.chip_width}x{tile.chip_height}.tif"
    )


def read_chip(dataset: DatasetReader, tile: TileWindow, resampling: Resampling = Resampling.bilinear) -> np.ndarray:
    """The tile's window of every band, resampled to the chip size: ``(bands, chip_height, chip_width)``."""
    window = Window(tile.col_off, tile.row_off, tile.width, tile.height)
    shape = (dataset.count, tile.chip_height, tile.chip_width)
    same_size = (tile.width, tile.height) == (tile.chip_width, tile.chip_height)
    return dataset.read(window=window, out_shape=shape, resampling=Resampling.nearest if same_size else resampling)


def chip_geotiff(
    pixels: np.ndarray, tile: TileWindow, *, band_names: tuple[str, ...] = (), nodata: float | None = None
) -> bytes:
    """A chip's pixels ``(bands, H, W)`` as GeoTIFF bytes, georeferenced by the tile (when it has a georeference).

    ``nodata`` (the scene's no-data value) is written into the chip, so whoever reads the chip (the inference service)
    masks the same pixels the scene declared empty."""
    count, height, width = pixels.shape
    profile: dict[str, object] = {
        "driver": "GTiff", "width": width, "height": height, "count": count, "dtype": pixels.dtype.name,
        "compress": "deflate",
    }  # fmt: skip
    if nodata is not None:
        profile["nodata"] = nodata
    if is_georeferenced(tile):
        profile.update(transform=affine_from_message(tile.chip_transform), crs=CRS.from_user_input(tile.crs))
    with MemoryFile() as memory:
        with memory.open(**profile) as chip:
            chip.write(pixels)
            for index, name in enumerate(band_names[:count], start=1):
                chip.set_band_description(index, name)
        return bytes(memory.read())
