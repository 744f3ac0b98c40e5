"""EarthGPT-X: a spatial multimodal LLM for remote sensing, and the library its services share.

Sub-packages: ``v1`` (generated protobuf events), ``bus`` (Kafka), ``store`` (MinIO and PostGIS), ``geo``
(georeferencing), ``model`` (the network), ``data`` (dataset generator), ``training`` (train and evaluate).
"""

__version__ = "0.1.0"
