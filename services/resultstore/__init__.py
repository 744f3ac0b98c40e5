"""resultstore: ``inference.results`` -> PostGIS (tasks + georeferenced results) -> ``results.stored``.

Read in this order: ``settings.py`` (configuration), ``handlers.py`` (what happens to one event), ``main.py``
(the process: logging, metrics, the consumer loop).
"""
