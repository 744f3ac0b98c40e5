"""The ingest service's HTTP routes: ``scenes`` (upload, status) and ``health``."""
