"""The stores: objects in MinIO (``objects``) and the PostGIS schema (``models``, migrations) behind one
repository (``repository``) through which all database writes go.

    from earthgptx.store.objects import ObjectStore
    from earthgptx.store.repository import Repository
    from earthgptx.store.records import SceneRecord, TaskRecord, ResultRecord, AoiRecord
    from earthgptx.store.errors import StoreUnavailable, StoreError

Migrations: ``python -m earthgptx.store.migrate upgrade head``.
"""
