"""Serving the trained EarthGPT-X on NVIDIA Triton (docs/architecture.md, "Serving").

    build.py          python -m earthgptx.serving.build: the model repository of a checkpoint (make model)
    triton_models.py  the three python models (vision_encoder, llm, entry model earthgptx); model.py files subclass
    generation.py     batched greedy generation across requests (KV cache, per-request limits, count copy, masks)
    vision.py         the ONNX vision graph over many requests at once (ragged prompt counts)
    requests.py       one request in (validated, encoded by the processor), one answer out (chip pixels)
    client.py         calling the entry model with tritonclient (gRPC asyncio / HTTP); errors as transient/invalid
    answers.py        the request and answer types (plain data, no torch: what a calling service needs)
    text.py           text tensors as UTF-8 bytes in UINT8 (why: the wheel stub's NumPy 1.x bridge)
    version.py        the checkpoint's version string, carried by every response

``model_repository/README.md`` explains the layout and why the entry model calls the others through BLS.
"""
