"""Training and evaluation of EarthGPT-X.

- ``config``: the run recipe read from YAML (``configs/tiny.yaml``);
- ``datasets``: generate/reuse the data, build the tokenizer, pre-encode records into device tensors, sample;
- ``train``: one-stage fusion training (``python -m earthgptx.training.train --config ...``; DDP via torchrun);
- ``evaluate``: the held-out report per task × modality × prompt type (``python -m earthgptx.training.evaluate``);
- ``metrics``: the metrics, the report and the acceptance targets.

See ``docs/training.md``.
"""
