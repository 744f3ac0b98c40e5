"""What a product says about each band's units: ``BandMeta``, read from a file, a STAC item or a Landsat MTL.

Ingest records, per band, the unit, scale, offset and no-data value and the scene's product level (the scenes
table and the STAC item's ``raster:bands``); ``BandMeta`` is that record as the converters read it:

- ``name``: the band name the processor uses (``red``, ``B04``, ``vv``, ``tir`` …);
- ``sensor_band``: the sensor's own band number, for the per-band keys of the metadata (``4`` for Landsat
  ``SR_B4`` / ``B4``, ``8A`` for Sentinel-2 ``B8A``), taken from the name when not given;
- ``unit``, ``scale``, ``offset``, ``nodata``, ``dtype``: as in rasterio (``units``, ``scales``, ``offsets``,
  ``nodatavals``, ``dtypes``) and STAC ``raster:bands`` (``unit``, ``scale``, ``offset``, ``nodata``,
  ``data_type``); physical value = ``DN × scale + offset``;
- ``tags``: the band's own tags over the dataset's tags over the MTL's keys (``SUN_ELEVATION``,
  ``REFLECTANCE_MULT_BAND_4``, ``K1_CONSTANT_BAND_10``, ``PROCESSING_BASELINE``, ``BOA_ADD_OFFSET`` …).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rasterio.io import DatasetReader

__all__ = [
    "BandMeta",
    "band_meta_from_ingest",
    "band_metas_from_stac",
    "parse_mtl",
    "read_band_metas",
    "sensor_band_of",
]

_SENSOR_BAND = re.compile(r"^(?:(?:SR|ST|TOA|QA)_)?B0*(\d{1,2}A?)$", re.IGNORECASE)


def sensor_band_of(name: str | None) -> str | None:
    """The sensor band number in a name like ``B4``, ``B04``, ``SR_B4``, ``ST_B10`` or ``B8A`` (upper case)."""
    if not name:
        return None
    match = _SENSOR_BAND.match(name.strip())
    return match.group(1).upper() if match else None


@dataclass(frozen=True)
class BandMeta:
    """One band's radiometric metadata (see the module docstring for each field)."""

    name: str | None = None
    unit: str | None = None
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None
    dtype: str | None = None
    sensor_band: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.sensor_band is None:
            object.__setattr__(self, "sensor_band", sensor_band_of(self.name))

    @property
    def has_scaling(self) -> bool:
        """Whether the product declares a scale or offset other than the identity."""
        return self.scale != 1.0 or self.offset != 0.0

    def tag(self, *keys: str) -> str | None:
        """The first of ``keys`` present in the tags (case-insensitive), else ``None``."""
        upper = {k.upper(): v for k, v in self.tags.items()}
        for key in keys:
            value = upper.get(key.upper())
            if value is not None and str(value).strip() != "":
                return str(value).strip()
        return None

    def number(self, *keys: str) -> float | None:
        """Like :meth:`tag`, as a float (``ValueError`` naming the key when it is not a number)."""
        upper = {k.upper(): v for k, v in self.tags.items()}
        for key in keys:
            value = upper.get(key.upper())
            if value is None or str(value).strip() == "":
                continue
            try:
                return float(str(value).strip().strip('"'))
            except ValueError as exc:
                raise ValueError(f"metadata {key} = {value!r} is not a number") from exc
        return None

    def band_number(self, template: str) -> float | None:
        """A per-band key such as ``REFLECTANCE_MULT_BAND_{band}`` for this band's sensor number."""
        if self.sensor_band is None:
            return None
        return self.number(template.format(band=self.sensor_band))


def parse_mtl(text: str) -> dict[str, str]:
    """A Landsat Collection 2 MTL file (the ODL ``*_MTL.txt`` or the ``*_MTL.json``) → flat ``KEY: value``.

    Group names are dropped (the keys are unique across groups: ``SUN_ELEVATION``, ``REFLECTANCE_MULT_BAND_4``,
    ``K1_CONSTANT_BAND_10``, ``PROCESSING_LEVEL`` …); quotes around strings are removed.
    """
    stripped = text.lstrip()
    if stripped.startswith("{"):
        flat: dict[str, str] = {}

        def walk(node: Any) -> None:
            for key, value in node.items():
                if isinstance(value, Mapping):
                    walk(value)
                else:
                    flat[str(key).upper()] = str(value)

        walk(json.loads(stripped))
        return flat
    values: dict[str, str] = {}
    for line in text.splitlines():
        if "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().upper()
        if key in ("GROUP", "END_GROUP") or not key:
            continue
        values[key] = value.strip().strip('"')
    if not values:
        raise ValueError("not a Landsat MTL file: no KEY = value lines")
    return values


def read_band_metas(
    src: DatasetReader,
    names: Sequence[str] | None = None,
    extra_tags: Mapping[str, str] | None = None,
    indexes: Sequence[int] | None = None,
) -> list[BandMeta]:
    """The ``BandMeta`` of every band (or of the 1-based ``indexes``) of an open rasterio dataset; ``names``
    (one per band read) override the band descriptions; ``extra_tags``, e.g. a parsed MTL, sit under the file's
    own tags."""
    chosen = list(indexes) if indexes is not None else list(range(1, src.count + 1))
    if any(not 1 <= i <= src.count for i in chosen):
        raise ValueError(f"band indexes {chosen} outside 1..{src.count}")
    if names is not None and len(names) != len(chosen):
        raise ValueError(f"{len(names)} band names for {len(chosen)} bands read")
    dataset_tags = {**(extra_tags or {}), **src.tags()}
    metas = []
    for position, index in enumerate(chosen):
        band_tags = {**dataset_tags, **src.tags(index)}
        description = src.descriptions[index - 1]
        name = names[position] if names is not None else description
        nodata = src.nodatavals[index - 1]
        metas.append(
            BandMeta(
                name=name,
                unit=src.units[index - 1] or band_tags.get("unit") or band_tags.get("UNIT") or None,
                scale=float(src.scales[index - 1]),
                offset=float(src.offsets[index - 1]),
                nodata=float(nodata) if nodata is not None else None,
                dtype=src.dtypes[index - 1],
                sensor_band=sensor_band_of(description) or sensor_band_of(name),
                tags=band_tags,
            )
        )
    return metas


def band_metas_from_stac(
    raster_bands: Sequence[Mapping[str, Any]],
    names: Sequence[str] | None = None,
    properties: Mapping[str, Any] | None = None,
) -> list[BandMeta]:
    """``BandMeta`` per entry of a STAC asset's ``raster:bands`` (plus the item's ``properties`` as tags, e.g.
    ``view:sun_elevation``, ``s2:processing_baseline``, ``sar:product_type``)."""
    tags: dict[str, str] = {}
    for key, value in (properties or {}).items():
        if isinstance(value, str | int | float):
            tags[str(key)] = str(value)
    if "view:sun_elevation" in tags:
        tags.setdefault("SUN_ELEVATION", tags["view:sun_elevation"])
    if "s2:processing_baseline" in tags:
        tags.setdefault("PROCESSING_BASELINE", tags["s2:processing_baseline"])
    metas = []
    for index, band in enumerate(raster_bands):
        name = names[index] if names is not None else band.get("name")
        nodata = band.get("nodata")
        metas.append(
            BandMeta(
                name=name,
                unit=band.get("unit"),
                scale=float(band.get("scale", 1.0)),
                offset=float(band.get("offset", 0.0)),
                nodata=float(nodata) if nodata is not None else None,
                dtype=band.get("data_type"),
                tags=tags,
            )
        )
    return metas


def band_meta_from_ingest(
    band: Mapping[str, Any], scene_tags: Mapping[str, str] | None = None, dtype: str | None = None
) -> BandMeta:
    """``BandMeta`` from the band record ingest stores with a scene (``earthgptx.scenes.validate.BandInfo.to_json``:
    ``name``, ``canonical``, ``description``, ``unit``, ``scale``, ``offset``, ``nodata`` (``"nan"`` for NaN),
    ``tags``), the scene's dtype and its dataset-level tags (sun elevation, MTL or Sentinel-2 keys)."""
    nodata = band.get("nodata")
    scale, offset = band.get("scale"), band.get("offset")
    description = band.get("description")
    name = band.get("canonical") or band.get("name")
    return BandMeta(
        name=name,
        unit=band.get("unit"),
        scale=float(scale) if scale is not None else 1.0,
        offset=float(offset) if offset is not None else 0.0,
        nodata=float(nodata) if nodata is not None else None,
        dtype=dtype,
        sensor_band=sensor_band_of(description) or sensor_band_of(band.get("name")),
        tags={**(scene_tags or {}), **{str(k): str(v) for k, v in (band.get("tags") or {}).items()}},
    )
