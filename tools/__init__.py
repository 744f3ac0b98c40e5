"""Scripts a person runs against the local stack (``python -m tools.<name>``); not part of the library."""
