"""Scenes as they enter the platform: received, validated, turned into COGs, catalogued, announced (issue 22).

Read in this order: ``receive`` (a file streamed to disk, hashed, size-limited; the scene id), ``metadata`` (what
the sender says), ``validate`` (the rules, with rasterio), ``cog`` (rio-cogeo), ``stac`` (rio-stac + pystac),
``ingest`` (the pipeline and its delivery guarantees). ``bands`` holds the processor's band-name rules without
importing torch. The catalogue's database side is ``earthgptx.store.scenes``; footprints split at the
antimeridian come from ``earthgptx.geo.outline``.
"""

from earthgptx.scenes.errors import SceneRejected
from earthgptx.scenes.ingest import IngestResult, SceneIngestor, cog_key, scene_ingested_event
from earthgptx.scenes.metadata import SceneMetadata, parse_sidecar
from earthgptx.scenes.receive import Received, Spool, receive, scene_id_for
from earthgptx.scenes.validate import InspectedScene, inspect_scene

__all__ = [
    "IngestResult",
    "InspectedScene",
    "Received",
    "SceneIngestor",
    "SceneMetadata",
    "SceneRejected",
    "Spool",
    "cog_key",
    "inspect_scene",
    "parse_sidecar",
    "receive",
    "scene_id_for",
    "scene_ingested_event",
]
