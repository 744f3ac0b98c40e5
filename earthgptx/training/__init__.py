"""Training and evaluation of EarthGPT-X. Read in this order:

- ``recipe``: a run's recipe, read from YAML (``configs/tiny-common.yaml`` + one file per stage);
- ``train``: ``train()`` as a short sequence of named steps, and the command line (DDP via torchrun);
- ``prepare``: the data, tokenizer, processor and model of a run (fresh, or continued with the stage's surgery);
- ``pretrain``: the optional phases that train one part alone first (vision tower, centre head);
- ``loop``: the main training phase (a step, a budget planner, the loss log);
- ``datasets``: generate/reuse the data, build the tokenizer, pre-encode records into device tensors, sample;
- ``auxiliary``: the auxiliary perception targets and heads;
- ``optimisation``, ``checkpoints``, ``devices``: AdamW and its schedule; ``last.pt`` and the model folder; devices
  and the process group;
- ``evaluate``: the held-out report per task × modality × prompt type (``python -m earthgptx.training.evaluate``);
- ``scoring``: the metrics, the report and the acceptance targets;
- ``calibrate_counts``, ``probe_counting``, ``probe_numbers``: diagnostics of the counting path and number tokens.

Model surgery (ordinal numbers, count tokens, copy targets, re-initialised parts) lives beside the model, in
``earthgptx.model.surgery_earthgptx``. See ``docs/training.md``.
"""
