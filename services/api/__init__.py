"""api: how analysts, dashboards, QGIS and the web map reach the results (read) and ask questions (write).

Read in this order: ``settings.py`` (configuration), ``main.py`` (the app: tipg's OGC API Features under
``/ogc``, titiler's imagery tiles under ``/imagery``, the project's routes under ``/v1``, the web map at ``/``),
``security.py`` (API keys hashed with argon2, per-key rate limits), ``errors.py`` (the one exception → status
map), then ``routers/``. ``python -m services.api keys create --name NAME`` issues a key (``cli.py``).
Which tables are published is decided by the ``ogc`` schema's views (migration 0003), not here.
"""
