"""Thin services on top of the ``earthgptx`` library: each one is settings, handlers and a ``main``."""
