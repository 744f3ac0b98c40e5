"""inference: ``prompts.tasks`` -> the chip from MinIO -> Triton's ``earthgptx`` model -> ``inference.results``.

Read in this order: ``settings.py`` (configuration), ``handlers.py`` (what happens to a poll's tasks), ``main.py``
(the process: the kit's consumer lifecycle, the health server).
"""
