"""Thin services on top of the ``earthgptx`` library: each one is settings, handlers and a ``main``.

``python -m services.<name>`` starts one: ``ingest``, ``promptgen``, ``inference``, ``resultstore`` (consumers
and producers of the Kafka topics) and ``api`` (HTTP). Each wires its resources into the service kit
(``earthgptx.runtime``), imports ``earthgptx.*`` only, and never another service (``tests/test_boundaries.py``).
The topology, topics and delivery rules are in ``docs/architecture.md``.
"""
