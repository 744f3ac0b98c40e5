"""ingest: ground stations' scenes in (HTTP upload or drop bucket), COGs in MinIO, rows in PostGIS, and
``scenes.ingested`` out.

Read in this order: ``settings.py`` (configuration), ``routers/scenes.py`` (``POST /v1/scenes`` and the status
route), ``handlers.py`` (a file dropped into the bucket), ``main.py`` (the app, its resources, the drop consumer).
The work itself (validation, COG, STAC, catalogue, event) is the library's: ``earthgptx.scenes``.
"""
