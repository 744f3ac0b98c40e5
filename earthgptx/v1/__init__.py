"""Generated protobuf classes of ``proto/earthgptx/v1`` (``make proto``); do not edit by hand.

Import the messages from ``earthgptx.v1.events_pb2`` (or the helpers in ``earthgptx.events``).
"""
