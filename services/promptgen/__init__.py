"""promptgen: ``scenes.ingested``, ``results.stored`` and ``queries.requested`` -> chips in MinIO and
``prompts.tasks``.

Read in this order: ``settings.py`` (configuration), ``cascade.py`` (which questions each level asks: pure rules),
``handlers.py`` (what happens to one event), ``main.py`` (the process).
"""
