"""Validating a received raster with rasterio, before anything is stored.

The rules, each refused with its own reason (``SceneRejected``):
- readable, and a GeoTIFF (GDAL's GTiff driver, which also reads COGs), complete: no pixel block of its block
  directory runs past the end of the file (a transfer cut short);
- each side between ``MIN_SIDE`` and ``MAX_SIDE`` pixels, checked from the header before any pixel is read (a
  header declaring 2,000,000 × 2,000,000 px costs nothing);
- 1 to 13 bands of one dtype among uint8, uint16, int16 and float32;
- a modality (the request's, else the file's ``modality`` tag) among the model's, and band names (the request's,
  else the file's band descriptions) that the processor accepts for it (``earthgptx.scenes.bands``);
- georeferenced: a CRS and a non-identity affine transform, or ground control points with a CRS. A GCP-referenced
  file is rectified while its COG is written, with GDAL's GCP transformer (a warp into the GCPs' CRS, as
  ``gdalwarp`` does: a polynomial fitted to the GCPs); the scene records ``georeference = "gcps"`` and the GCP
  count, and its width, height and transform are those of the rectified grid;
- no band without a single valid pixel (all NaN, or all no-data by the file's no-data value or mask). Blocks are
  read one at a time and the scan stops as soon as every band has shown a valid pixel, so an ordinary scene costs
  one block; a file whose pixels cannot be read (truncated, corrupt) is refused here or when its COG is written.

Per band the file's own radiometric description is kept (unit, scale, offset, no-data, colour interpretation,
tags), with the product level, for the processor (issue 25).
"""

from __future__ import annotations

import datetime as dt
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT

from earthgptx.geo import GeoreferenceError, check_georeference
from earthgptx.scenes.bands import MODALITIES, canonical_bands
from earthgptx.scenes.errors import SceneRejected
from earthgptx.scenes.metadata import SceneMetadata

__all__ = [
    "ALLOWED_DTYPES",
    "MAX_BANDS",
    "MAX_SIDE",
    "MIN_SIDE",
    "BandInfo",
    "InspectedScene",
    "inspect_scene",
    "open_rectified",
]

ALLOWED_DTYPES = ("uint8", "uint16", "int16", "float32")
MIN_SIDE = 32
MAX_SIDE = 100_000
MAX_BANDS = 13
_MAX_TAG_TEXT = 500


@dataclass(frozen=True)
class BandInfo:
    """One band as the file describes it (values the file does not state are None)."""

    index: int  # 1-based, rasterio's
    name: str
    canonical: str
    description: str | None
    unit: str | None
    scale: float | None
    offset: float | None
    nodata: float | None
    colorinterp: str
    tags: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON-safe (a NaN no-data value is written as the text "nan")."""
        nodata: float | str | None = self.nodata
        if self.nodata is not None and math.isnan(self.nodata):
            nodata = "nan"
        return {
            "index": self.index, "name": self.name, "canonical": self.canonical, "description": self.description,
            "unit": self.unit, "scale": self.scale, "offset": self.offset, "nodata": nodata,
            "colorinterp": self.colorinterp, "tags": self.tags,
        }  # fmt: skip


@dataclass(frozen=True)
class InspectedScene:
    """A raster that passed every rule, with what the catalogue records about it."""

    path: Path
    width: int
    height: int
    dtype: str
    modality: str
    bands: tuple[str, ...]  # as given (request or file)
    crs: str
    transform: tuple[float, float, float, float, float, float]
    georeference: str  # "transform" or "gcps"
    gcp_count: int
    band_info: tuple[BandInfo, ...]
    metadata: SceneMetadata  # the request's, completed from the file's tags

    @property
    def count(self) -> int:
        return len(self.bands)


def _tag(tags: dict[str, str], *names: str) -> str | None:
    lowered = {k.lower(): v for k, v in tags.items()}
    for name in names:
        value = lowered.get(name.lower())
        if value and value.strip():
            return value.strip()
    return None


def _file_time(src: DatasetReader) -> dt.datetime | None:
    text = src.get_tag_item("ACQUISITIONDATETIME", "IMAGERY") or src.tags().get("TIFFTAG_DATETIME")
    if not text:
        return None
    for pattern in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"):
        try:
            moment = dt.datetime.strptime(text.strip().replace("Z", "+0000"), pattern)
        except ValueError:
            continue
        return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    return None


def _file_metadata(src: DatasetReader) -> SceneMetadata:
    """What the file says about itself: tags and band descriptions."""
    tags = src.tags()
    descriptions = tuple(d.strip() for d in src.descriptions if d and d.strip())
    return SceneMetadata(
        modality=(_tag(tags, "modality", "EGX_MODALITY") or "").lower() or None,
        sensor=_tag(tags, "sensor", "SENSOR", "SATELLITE", "SPACECRAFT_ID"),
        bands=descriptions if len(descriptions) == src.count else None,
        acquired_at=_file_time(src),
        product_level=_tag(tags, "product_level", "PROCESSING_LEVEL", "PRODUCT_TYPE", "DATA_TYPE"),
    )


_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def gdal_message(exc: Exception, path: Path) -> str:
    """GDAL's message without the server's file name (a client has no use for it)."""
    return str(exc).replace(f"'{path}'", "the file").replace(str(path), "the file").replace(path.name, "the file")


def _open(path: Path) -> DatasetReader:
    try:
        with warnings.catch_warnings():
            # A missing georeference is refused below, with a reason; GDAL's warning would only repeat it.
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = rasterio.open(path)
    except RasterioError as exc:
        with open(path, "rb") as handle:
            signature = handle.read(4)
        what = "a TIFF that GDAL cannot read (truncated or corrupt?)" if signature in _TIFF_SIGNATURES else "not a TIFF"
        raise SceneRejected(f"{what}: {gdal_message(exc, path)}", kind="not_geotiff") from exc
    if src.driver != "GTiff":
        src.close()
        raise SceneRejected(f"not a GeoTIFF (GDAL reads it as {src.driver})", kind="not_geotiff")
    return src


def _check_shape(src: DatasetReader) -> str:
    if not (MIN_SIDE <= src.width <= MAX_SIDE and MIN_SIDE <= src.height <= MAX_SIDE):
        raise SceneRejected(
            f"raster is {src.width} x {src.height} px; each side must be between {MIN_SIDE} and {MAX_SIDE} px"
        )
    if not 1 <= src.count <= MAX_BANDS:
        raise SceneRejected(f"raster has {src.count} bands; 1 to {MAX_BANDS} are accepted")
    dtypes = set(src.dtypes)
    if len(dtypes) != 1:
        raise SceneRejected(f"bands have different dtypes {sorted(dtypes)}; one dtype for all bands is required")
    dtype = dtypes.pop()
    if dtype not in ALLOWED_DTYPES:
        raise SceneRejected(f"dtype {dtype} is not accepted; use one of {', '.join(ALLOWED_DTYPES)}")
    return dtype


def _check_complete(src: DatasetReader, path: Path) -> None:
    """Refuse a TIFF whose pixel blocks run past the end of the file (cut short in transfer), from the block
    directory alone: GDAL reports each block's offset and length (``TIFF`` metadata domain), no pixel is read."""
    size = path.stat().st_size
    rows, cols = src.block_shapes[0]
    grid_rows, grid_cols = -(-src.height // rows), -(-src.width // cols)
    bands = [1] if src.interleaving is not None and src.interleaving.name == "PIXEL" else list(src.indexes)
    end = 0
    for band in bands:
        for row in range(grid_rows):
            for col in range(grid_cols):
                offset = src.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=band)
                length = src.get_tag_item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=band)
                if offset is None or length is None:
                    raise SceneRejected("a TIFF whose block directory cannot be read (truncated or corrupt?)")
                end = max(end, int(offset) + int(length))
    if end > size:
        raise SceneRejected(f"truncated file: it has {size} bytes but its pixel data runs to byte {end}")


def _check_names(metadata: SceneMetadata) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    if not metadata.modality:
        raise SceneRejected(
            f"no modality: send one ({', '.join(MODALITIES)}) with the request, or tag the file with 'modality'"
        )
    if metadata.modality not in MODALITIES:
        raise SceneRejected(f"unknown modality {metadata.modality!r}; expected one of {', '.join(MODALITIES)}")
    if not metadata.bands:
        raise SceneRejected("no band names: send 'bands' with the request, or set the file's band descriptions")
    try:
        canonical = canonical_bands(metadata.modality, metadata.bands)
    except ValueError as exc:
        raise SceneRejected(f"band names do not fit the modality: {exc}") from exc
    return metadata.modality, metadata.bands, canonical


def _georeference(src: DatasetReader) -> tuple[str, int]:
    gcps, gcp_crs = src.gcps
    if src.crs is not None and not src.transform.is_identity:
        try:
            check_georeference(src.transform, src.crs)
        except GeoreferenceError as exc:
            raise SceneRejected(f"no usable georeference: {exc}") from exc
        return "transform", 0
    if gcps:
        if gcp_crs is None:
            raise SceneRejected(f"the file has {len(gcps)} ground control points but no CRS for them")
        if len(gcps) < 3:
            raise SceneRejected(f"the file has {len(gcps)} ground control points; at least 3 are needed")
        return "gcps", len(gcps)
    if src.crs is None:
        raise SceneRejected("no georeference: the file has no CRS and no ground control points")
    raise SceneRejected("no georeference: the file has a CRS but the identity transform and no control points")


def _check_pixels(src: DatasetReader) -> None:
    """Refuse bands without one valid pixel; stops at the first block in which every band had one."""
    pending = set(range(src.count))
    floating = np.dtype(src.dtypes[0]).kind == "f"
    try:
        for _, window in src.block_windows(1):
            data = src.read(window=window, masked=True)
            for band in list(pending):
                values = data[band]
                valid = ~np.ma.getmaskarray(values)
                if floating:
                    valid &= np.isfinite(values.data)
                if valid.any():
                    pending.discard(band)
            if not pending:
                return
    except RasterioError as exc:
        raise SceneRejected(f"pixels cannot be read (truncated or corrupt file): {gdal_message(exc, Path(src.name))}") from exc
    names = ", ".join(str(b + 1) for b in sorted(pending))
    raise SceneRejected(f"band(s) {names} hold no valid pixel (all NaN or no-data)")


def _band_info(src: DatasetReader, bands: tuple[str, ...], canonical: tuple[str, ...]) -> tuple[BandInfo, ...]:
    infos = []
    for i in range(src.count):
        tags = {k: str(v)[:_MAX_TAG_TEXT] for k, v in src.tags(i + 1).items()}
        infos.append(
            BandInfo(
                index=i + 1,
                name=bands[i],
                canonical=canonical[i],
                description=src.descriptions[i],
                unit=src.units[i] or None,
                # GDAL reports 1 and 0 when the file states nothing; those are also the neutral values.
                scale=float(src.scales[i]),
                offset=float(src.offsets[i]),
                nodata=None if src.nodatavals[i] is None else float(src.nodatavals[i]),
                colorinterp=src.colorinterp[i].name,
                tags=tags,
            )
        )
    return tuple(infos)


def inspect_scene(path: str | Path, request: SceneMetadata) -> InspectedScene:
    """Apply every rule to the file at ``path``; ``SceneRejected`` with the first rule it breaks."""
    path = Path(path)
    with _open(path) as src:
        dtype = _check_shape(src)
        _check_complete(src, path)
        metadata = request.merged(_file_metadata(src))
        modality, bands, canonical = _check_names(metadata)
        if len(bands) != src.count:
            raise SceneRejected(f"{len(bands)} band names were given for a raster of {src.count} bands")
        georeference, gcp_count = _georeference(src)
        _check_pixels(src)
        infos = _band_info(src, bands, canonical)
        with open_rectified(src, georeference) as grid:
            width, height, crs, transform = grid.width, grid.height, grid.crs, grid.transform
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise SceneRejected(f"rectified from its control points the raster is {width} x {height} px; out of range")
    return InspectedScene(
        path=path,
        width=width,
        height=height,
        dtype=dtype,
        modality=modality,
        bands=bands,
        crs=crs.to_string(),
        transform=tuple(Affine(*transform[:6]))[:6],  # type: ignore[arg-type]
        georeference=georeference,
        gcp_count=gcp_count,
        band_info=infos,
        metadata=metadata,
    )


@contextmanager
def open_rectified(src: DatasetReader, georeference: str) -> Iterator[DatasetReader | WarpedVRT]:
    """The dataset to write the COG from: the file itself, or its warp through the GCPs into their CRS."""
    if georeference != "gcps":
        yield src
        return
    gcp_crs = src.gcps[1]
    try:
        vrt = WarpedVRT(src, src_crs=gcp_crs, crs=gcp_crs)
    except RasterioError as exc:
        raise SceneRejected(f"the ground control points do not give a usable georeference: {exc}") from exc
    with vrt:
        yield vrt
