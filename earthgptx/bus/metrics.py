"""Prometheus metrics of the bus (process-wide; services expose them with ``prometheus_client``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_PUBLISHED = Counter(
    "egx_bus_events_published_total", "Events handed to the producer", ["topic"]
)
RECORDS_PROCESSED = Counter(
    "egx_bus_records_processed_total", "Records whose handler succeeded", ["group", "topic"]
)
RECORDS_RETRIED = Counter(
    "egx_bus_records_retried_total", "Handler attempts that failed with a transient error", ["group", "topic"]
)
RECORDS_DEAD_LETTERED = Counter(
    "egx_bus_records_dead_lettered_total", "Records sent to the dead-letter topic", ["group", "topic", "cause"]
)
REBALANCES = Counter(
    "egx_bus_rebalances_total", "Partition revocations seen by the consumer loop", ["group"]
)
HANDLER_SECONDS = Histogram(
    "egx_bus_handler_seconds",
    "Wall time of one handler call",
    ["group", "topic"],
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0),
)
CONSUMER_READY = Gauge(
    "egx_bus_consumer_ready", "1 when the consumer's dependencies answer, 0 while it waits out an outage", ["group"]
)
RECORDS_IN_FLIGHT = Gauge(
    "egx_bus_records_in_flight", "Records handed to the concurrent mode's workers and not yet done", ["group"]
)
