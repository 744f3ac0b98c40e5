"""GPU check of the `paper` configuration (random weights): build, forward, generation throughput, vision engines.

Builds EarthGPT-X `paper` (DINOv2-L/14 + ConvNeXt-L at 448 px + a 7B Llama-shaped LM) directly on CUDA in bf16 and
measures, writing the JSON report to ``--out`` after every stage (a run cut short still leaves its figures) and a
markdown summary beside it (``<out>.md``):

1. ``forward``: one forward with loss (448 px chip, 2 visual prompts, a short instruction);
2. ``generate``: ``model.generate`` of 16 new tokens at batch 1 and 4, prefill included (as on 2026-11-27);
3. ``throughput`` at batch 1 and 8: the vision side, the LM prefill alone (one forward over the merged embeddings,
   building the KV cache), and decode tokens/s from ``language_model.generate`` of 1 and of ``--decode-tokens``
   new tokens with the stop disabled (``min_new_tokens``): decode = (t_N - t_1) over B x (N - 1) tokens;
4. ``vision``: the vision side (the ONNX export's wrapper) at batch 1 and 8: PyTorch eager in the model's dtype,
   the same captured in a CUDA graph, ``torch.compile`` (started only while under ``--compile-budget-s``), and
   ONNX Runtime with the execution providers it has (``onnxruntime.get_available_providers()`` is recorded; CUDA and
   TensorRT are "not available" on a CPU-only onnxruntime build, and the paper's vision side is then not exported).

The script imports only the network modules of ``earthgptx.model`` when the package's processor cannot be
imported (a GPU host without rasterio / shapely / pyproj): it needs torch, transformers, numpy and, for stage 4,
onnx and onnxruntime. Meant to finish in under 150 s on an H100/H200.

    python bench/gpu_paper_check.py --out "$OUT/gpu_paper_check.json"
    python bench/gpu_paper_check.py --smoke --out /tmp/smoke.json      # tiny config, any device (CPU test)
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import statistics
import sys
import tempfile
import time
import traceback
import types
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

START = time.perf_counter()


def network_modules() -> SimpleNamespace:
    """``EarthGPTXConfig``, ``EarthGPTXForConditionalGeneration``, the ``export_onnx`` module and the prompt
    rasteriser (``None`` when unavailable). ``earthgptx.model``'s ``__init__`` imports the processor, which needs
    the geo stack (rasterio and friends); where that is missing, the package is entered without its ``__init__``
    and only the network's modules (torch + transformers) are loaded."""
    try:
        import earthgptx.model as package
        from earthgptx.model.processing_earthgptx import rasterize_prompt
    except ImportError as exc:
        log(f"earthgptx.model without its processor ({exc}); loading the network modules only")
        import earthgptx

        for name in [m for m in sys.modules if m == "earthgptx.model" or m.startswith("earthgptx.model.")]:
            if name.rsplit(".", 1)[-1].startswith("processing") or name == "earthgptx.model":
                del sys.modules[name]
        package = types.ModuleType("earthgptx.model")
        package.__path__ = [str(Path(earthgptx.__file__).parent / "model")]
        sys.modules["earthgptx.model"] = package
        rasterize_prompt = None
    configuration = importlib.import_module("earthgptx.model.configuration_earthgptx")
    modeling = importlib.import_module("earthgptx.model.modeling_earthgptx")
    return SimpleNamespace(
        EarthGPTXConfig=configuration.EarthGPTXConfig,
        EarthGPTXForConditionalGeneration=modeling.EarthGPTXForConditionalGeneration,
        export_onnx=importlib.import_module("earthgptx.model.export_onnx"),
        rasterize_prompt=rasterize_prompt,
        package=package,
    )


def log(message: str) -> None:
    print(f"[{time.perf_counter() - START:7.1f}s] {message}", flush=True)  # noqa: T201 (a bench script prints its progress)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], Any]) -> tuple[Any, float]:
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return result, time.perf_counter() - start


def best_of(device: torch.device, fn: Callable[[], Any], repeats: int) -> tuple[Any, list[float]]:
    """``fn``'s result and its wall times over ``repeats`` runs (callers report the least-disturbed one)."""
    seconds = []
    result = None
    for _ in range(repeats):
        result, elapsed = timed(device, fn)
        seconds.append(elapsed)
    return result, seconds


def request_ids(config: Any, num_prompts: int, words: int, rng: np.random.Generator) -> list[int]:
    """Token ids of `<s> USER: <image> ...words... <region1> ... <regionN> ASSISTANT:` with random word ids."""
    text = config.text_config
    reserved = {config.image_token_id, config.seg_token_id, *config.region_token_ids}
    reserved |= {text.pad_token_id, text.bos_token_id, text.eos_token_id}
    low = max(reserved - {config.image_token_id, config.seg_token_id, *config.region_token_ids}) + 1
    high = min(config.image_token_id, config.seg_token_id, *config.region_token_ids)
    if high - low < 10:  # tiny layout: specials first, words after them
        low, high = max(reserved) + 1, text.vocab_size

    def word() -> int:
        return int(rng.integers(low, high))

    ids = [text.bos_token_id] + [word() for _ in range(3)] + [config.image_token_id] * config.num_image_tokens
    ids += [word() for _ in range(words)]
    for i in range(num_prompts):
        ids += [word()] + [config.region_token_ids[i]] * config.tokens_per_prompt
    return ids + [word(), word()]


def prompt_masks(modules: SimpleNamespace, size: int, kinds: list[str]) -> torch.Tensor:
    """Rasterised prompts (the processor's rasteriser; plain boxes where the processor is not importable)."""
    shapes: dict[str, dict[str, Any]] = {
        "box": {"type": "box", "box": [0.2 * size, 0.25 * size, 0.45 * size, 0.6 * size]},
        "point": {"type": "point", "point": [0.7 * size, 0.3 * size]},
        "polygon": {
            "type": "polygon",
            "polygon": [[0.1 * size, 0.7 * size], [0.4 * size, 0.65 * size], [0.3 * size, 0.95 * size]],
        },
        "scribble": {"type": "scribble", "line": [[0.5 * size, 0.5 * size], [0.9 * size, 0.8 * size]]},
    }
    if modules.rasterize_prompt is not None:
        masks = [modules.rasterize_prompt(shapes[k], size, size, size, index=i) for i, k in enumerate(kinds)]
        return torch.from_numpy(np.stack(masks))
    boxes = torch.zeros(len(kinds), size, size)
    for i in range(len(kinds)):
        x, y = (i * size) // (len(kinds) + 1), (i * size) // (2 * len(kinds) + 2)
        boxes[i, y : y + size // 4, x : x + size // 4] = 1.0
    return boxes


def make_batch(
    modules: SimpleNamespace,
    config: Any,
    prompt_counts: list[int],
    words: list[int],
    device: torch.device,
    dtype: torch.dtype,
) -> dict[str, torch.Tensor]:
    """A left-padded inference batch of random chips whose requests differ in prompt count and text length."""
    rng = np.random.default_rng(0)
    size = config.image_size
    kinds = ["box", "point", "polygon", "scribble"] * 2
    rows = [request_ids(config, n, w, rng) for n, w in zip(prompt_counts, words, strict=True)]
    length = max(len(r) for r in rows)
    batch = len(rows)
    pad = config.text_config.pad_token_id
    input_ids = torch.full((batch, length), pad, dtype=torch.long)
    attention_mask = torch.zeros((batch, length), dtype=torch.long)
    slots = max(1, max(prompt_counts))
    masks = torch.zeros(batch, slots, size, size)
    valid = torch.zeros(batch, slots, dtype=torch.bool)
    for i, (row, n) in enumerate(zip(rows, prompt_counts, strict=True)):
        input_ids[i, length - len(row) :] = torch.tensor(row)
        attention_mask[i, length - len(row) :] = 1
        if n:
            masks[i, :n] = prompt_masks(modules, size, kinds[:n])
            valid[i, :n] = True
    generator = torch.Generator().manual_seed(1)
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": attention_mask.to(device),
        "pixel_values": torch.randn(batch, 13, size, size, generator=generator).to(device, dtype),
        "modality_ids": torch.arange(batch).remainder(4).to(device),
        "prompt_masks": masks.to(device, dtype),
        "prompt_valid": valid.to(device),
    }


# Requests of the throughput stage: prompt counts and instruction lengths differ, as in a served batch.
THROUGHPUT_COUNTS = [2, 0, 1, 3, 2, 1, 0, 3]
THROUGHPUT_WORDS = [12, 5, 20, 8, 15, 3, 9, 18]


def throughput(
    modules: SimpleNamespace,
    model: Any,
    device: torch.device,
    dtype: torch.dtype,
    batch_size: int,
    new_tokens: int,
    repeats: int,
) -> dict[str, Any]:
    """Vision, LM prefill alone, and decode tokens/s with the stop disabled, at ``batch_size``."""
    config = model.config
    text = config.text_config
    counts = (THROUGHPUT_COUNTS * batch_size)[:batch_size]
    words = (THROUGHPUT_WORDS * batch_size)[:batch_size]
    batch = make_batch(modules, config, counts, words, device, dtype)
    mask = batch["attention_mask"]
    lm = model.language_model

    with torch.no_grad():

        def vision() -> Any:
            return model.encode_vision(
                batch["pixel_values"], batch["modality_ids"], batch["prompt_masks"], batch["prompt_valid"]
            )

        encoded = vision()  # warm-up
        encoded, vision_s = best_of(device, vision, repeats)
        embeds = model.embed_inputs(
            batch["input_ids"], encoded.image_tokens, encoded.prompt_tokens, batch["prompt_valid"]
        )

        def prefill() -> Any:
            return lm(inputs_embeds=embeds, attention_mask=mask, use_cache=True, logits_to_keep=1)

        prefill()  # warm-up
        _, prefill_s = best_of(device, prefill, repeats)

        def decode(tokens: int) -> torch.Tensor:
            out = lm.generate(
                inputs_embeds=embeds,
                attention_mask=mask,
                max_new_tokens=tokens,
                min_new_tokens=tokens,  # the stop disabled: every row decodes `tokens` tokens
                do_sample=False,
                use_cache=True,
                pad_token_id=text.pad_token_id,
                eos_token_id=text.eos_token_id,
            )
            sequences = out if isinstance(out, torch.Tensor) else out.sequences
            return sequences[:, -tokens:]

        decode(2)  # warm-up
        _, one_s = best_of(device, lambda: decode(1), repeats)
        sequences, full_s = best_of(device, lambda: decode(new_tokens), repeats)
    steps = new_tokens - 1
    decode_s = min(full_s) - min(one_s)
    result = {
        "prompt_counts": counts,
        "prompt_len": int(batch["input_ids"].shape[1]),
        "new_tokens": new_tokens,
        "sequences_shape": list(sequences.shape),
        "vision_s": vision_s,
        "prefill_s": prefill_s,
        "generate_1_token_s": one_s,
        f"generate_{new_tokens}_tokens_s": full_s,
        # A negative difference means the timing noise exceeded the decode time (tiny smoke runs): no figure.
        "decode_ms_per_step": 1000 * decode_s / steps if decode_s > 0 else None,
        "decode_tokens_per_s": batch_size * steps / decode_s if decode_s > 0 else None,
        # What a caller sees: vision + prefill + decode of `new_tokens` tokens per request, stop disabled.
        "end_to_end_tokens_per_s": batch_size * new_tokens / (min(vision_s) + min(full_s)),
    }
    if sequences.shape[1] != new_tokens:
        raise RuntimeError(f"decode produced {tuple(sequences.shape)}, expected {new_tokens} tokens per row")
    return result


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def vision_engines(
    modules: SimpleNamespace,
    model: Any,
    report: dict[str, Any],
    device: torch.device,
    dtype: torch.dtype,
    repeats: int,
    compile_budget_s: float,
    save: Callable[[], None],
    allow_ort_cpu: bool,
) -> None:
    """The vision side at batch 1 and 8 in each engine; figures in ``report["vision"]``, saved after each."""
    export_onnx = modules.export_onnx
    wrapper = export_onnx.EarthGPTXVisionOnnx(model).eval()
    size = model.config.image_size
    section: dict[str, Any] = {"dtype": str(dtype).replace("torch.", ""), "prompt_slots": 2, "engines": {}}
    report["vision"] = section
    engines = section["engines"]
    inputs: dict[int, tuple[torch.Tensor, ...]] = {}
    reference: dict[int, tuple[torch.Tensor, ...]] = {}
    for batch in (1, 8):
        pixels, modality, masks, valid = export_onnx.example_inputs(
            size, batch=batch, num_prompts=2, seed=batch
        )
        inputs[batch] = (
            pixels.to(device, dtype),
            modality.to(device),
            masks.to(device, dtype),
            valid.to(device),
        )

    def record(
        engine: str, batch: int, seconds: list[float], outputs: tuple[torch.Tensor, ...] | None
    ) -> None:
        entry = engines.setdefault(engine, {})
        entry[f"batch{batch}"] = {
            "ms_median": 1000 * statistics.median(seconds),
            "ms_min": 1000 * min(seconds),
            "images_per_s": batch / min(seconds),
        }
        if outputs is not None and engine != "torch_eager":
            entry[f"batch{batch}"]["max_rel_err_vs_eager"] = max(
                rel_err(o, r) for o, r in zip(outputs, reference[batch], strict=True)
            )
        log(f"vision {engine} batch {batch}: {1000 * min(seconds):.1f} ms (min of {len(seconds)})")
        save()

    with torch.no_grad():
        for batch, args in inputs.items():  # PyTorch eager, the model's dtype
            wrapper(*args)
            outputs, seconds = best_of(device, lambda a=args: wrapper(*a), repeats)
            reference[batch] = tuple(o.clone() for o in outputs)
            record("torch_eager", batch, seconds, None)

        if device.type == "cuda":  # the same module, captured once per batch size and replayed
            for batch, args in inputs.items():
                try:
                    static = tuple(a.clone() for a in args)
                    stream = torch.cuda.Stream(device)
                    stream.wait_stream(torch.cuda.current_stream(device))
                    with torch.cuda.stream(stream):
                        for _ in range(2):
                            wrapper(*static)
                    torch.cuda.current_stream(device).wait_stream(stream)
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph):
                        captured = wrapper(*static)
                    _, seconds = best_of(device, graph.replay, repeats)
                    record("torch_cuda_graph", batch, seconds, captured)
                except Exception as exc:  # recorded, the other engines go on
                    engines.setdefault("torch_cuda_graph", {})[f"batch{batch}"] = {
                        "error": f"{type(exc).__name__}: {exc}"[:500]
                    }
                    log(f"vision cuda graph batch {batch}: failed ({type(exc).__name__}: {exc})")
                    save()
                    break
        else:
            engines["torch_cuda_graph"] = {"skipped": "no CUDA device"}

        ort_stage(modules, model, section, device, inputs, reference, repeats, allow_ort_cpu, save)

        for batch, args in inputs.items():  # torch.compile last: its compile time is the least predictable
            elapsed = time.perf_counter() - START
            if elapsed > compile_budget_s:
                engines.setdefault("torch_compile", {})[f"batch{batch}"] = {
                    "skipped": f"{elapsed:.0f} s elapsed > --compile-budget-s {compile_budget_s:.0f}"
                }
                save()
                continue
            try:
                torch._dynamo.reset()
                compiled = torch.compile(wrapper, dynamic=False)
                log(f"vision torch.compile batch {batch}: compiling ...")
                _, compile_s = timed(device, lambda a=args, c=compiled: c(*a))
                compiled(*args)
                outputs, seconds = best_of(device, lambda a=args, c=compiled: c(*a), repeats)
                record("torch_compile", batch, seconds, outputs)
                engines["torch_compile"][f"batch{batch}"]["compile_s"] = compile_s
                save()
            except Exception as exc:
                engines.setdefault("torch_compile", {})[f"batch{batch}"] = {
                    "error": f"{type(exc).__name__}: {exc}"[:500]
                }
                log(f"vision torch.compile batch {batch}: failed ({type(exc).__name__}: {exc})")
                save()


def ort_stage(
    modules: SimpleNamespace,
    model: Any,
    section: dict[str, Any],
    device: torch.device,
    inputs: dict[int, tuple[torch.Tensor, ...]],
    reference: dict[int, tuple[torch.Tensor, ...]],
    repeats: int,
    allow_cpu: bool,
    save: Callable[[], None],
) -> None:
    """ONNX Runtime with the GPU providers it has (fp32 graph of the vision side; the EPs choose their precision:
    TensorRT in FP16). Without a GPU provider the paper's vision side is not exported (a CPU run of it says nothing
    about the GPU); ``allow_cpu`` (the smoke run) goes on with the CPU provider so this path is exercised."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        section["onnxruntime"] = {"error": f"not importable: {exc}"}
        save()
        return
    available = ort.get_available_providers()
    info: dict[str, Any] = {"version": ort.__version__, "available_providers": available}
    section["onnxruntime"] = info
    log(f"onnxruntime {ort.__version__}: providers {available}")
    for name, provider in (
        ("ort_tensorrt", "TensorrtExecutionProvider"),
        ("ort_cuda", "CUDAExecutionProvider"),
    ):
        if provider not in available:
            section["engines"][name] = {"not_available": f"onnxruntime {ort.__version__} has no {provider}"}
    wanted = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
    if not wanted and not allow_cpu:
        save()
        return
    wanted = wanted or ["CPUExecutionProvider"]
    export_onnx = modules.export_onnx
    wrapper = export_onnx.EarthGPTXVisionOnnx(model)
    # export_vision_onnx reads the vision parts and the config off whatever it is given: an fp32 CPU copy.
    import copy

    parts = copy.deepcopy(wrapper).float().cpu().eval()
    source = SimpleNamespace(
        vision_tower=parts.vision_tower,
        prompt_encoder=parts.prompt_encoder,
        fusion=parts.fusion,
        multi_modal_projector=parts.multi_modal_projector,
        mask_decoder=parts.mask_decoder,
        counting_path=parts.counting_path,
        config=model.config,
    )
    engine = {"TensorrtExecutionProvider": "ort_tensorrt", "CUDAExecutionProvider": "ort_cuda"}.get(
        wanted[0], "ort_cpu"
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            log("onnx: exporting the vision side (fp32) ...")
            path, seconds = timed(
                device, lambda: export_onnx.export_vision_onnx(source, Path(tmp) / "vision.onnx")
            )
            info["export_s"] = seconds
            runner = export_onnx.VisionOnnxRunner(path, providers=[*wanted, "CPUExecutionProvider"])
            info["session_providers"] = runner.providers
            entry = section["engines"].setdefault(engine, {})
            for batch, args in inputs.items():
                numpy_args = tuple(
                    a.float().cpu().numpy() if a.is_floating_point() else a.cpu().numpy() for a in args
                )
                runner.run(*numpy_args)
                outputs, times = best_of(device, lambda a=numpy_args: runner.run(*a), repeats)
                entry[f"batch{batch}"] = {
                    "ms_median": 1000 * statistics.median(times),
                    "ms_min": 1000 * min(times),
                    "images_per_s": batch / min(times),
                    "max_rel_err_vs_eager": max(
                        rel_err(torch.from_numpy(o), r.cpu())
                        for o, r in zip(outputs.values(), reference[batch], strict=True)
                    ),
                }
                log(f"vision {engine} batch {batch}: {1000 * min(times):.1f} ms ({runner.providers})")
                save()
    except Exception as exc:  # optional stage: record and go on
        section["engines"].setdefault(engine, {})["error"] = f"{type(exc).__name__}: {exc}"[:500]
        log(f"onnx: failed ({type(exc).__name__}: {exc})")
    save()


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def summary(report: dict[str, Any]) -> str:
    """The markdown beside the JSON: what ran, and the figures so far."""
    lines = [
        f"# `{report.get('config')}` configuration on {report.get('device')} ({report.get('dtype')}, random weights)",
        "",
        f"`bench/gpu_paper_check.py`; torch {report['versions'].get('torch')}, transformers "
        f"{report['versions'].get('transformers')}, Python {report['versions'].get('python')}; "
        f"{report.get('total_s', time.perf_counter() - START):.0f} s in all. Raw figures in the JSON beside this file.",
        "",
    ]
    if "error" in report:
        lines += [f"**Stopped by an error**: `{report['error']}`", ""]
    parameters = report.get("parameters")
    if parameters:
        lines += [
            f"Parameters: {parameters['total'] / 1e9:.3f} B (LM {parameters['language_model'] / 1e9:.3f} B).",
            "",
        ]
    rows = report.get("throughput", {})
    if rows:
        lines += [
            "| batch | prompt tokens | vision (ms) | LM prefill (ms) | decode ms/step | decode tokens/s | end-to-end tokens/s |",
            "|---|---|---|---|---|---|---|",
        ]
        for key, r in rows.items():
            if "error" in r:
                lines.append(f"| {key} | error: {r['error']} | | | | | |")
                continue
            lines.append(
                f"| {key.removeprefix('batch')} | {r['prompt_len']} | {1000 * min(r['vision_s']):.1f} | "
                f"{1000 * min(r['prefill_s']):.1f} | {number(r['decode_ms_per_step'])} | "
                f"{number(r['decode_tokens_per_s'])} | "
                f"{r['end_to_end_tokens_per_s']:.1f} |"
            )
        first = next(iter(rows.values()))
        lines += [
            "",
            f"Decode: `language_model.generate` of {first.get('new_tokens')} tokens minus that of 1 token, stop disabled "
            "(min_new_tokens), greedy, KV cache; prefill: one LM forward over the merged embeddings. End to end: "
            "B x new tokens over (vision + generate of all new tokens).",
            "",
        ]
    vision = report.get("vision")
    if vision:
        lines += [
            f"Vision side ({vision['dtype']} for PyTorch; ONNX Runtime runs an fp32 graph), 2 prompt slots:",
            "",
            "| engine | batch 1 (ms) | batch 8 (ms) | batch 8 images/s | max rel. err. vs eager |",
            "|---|---|---|---|---|",
        ]
        for engine, figures in vision["engines"].items():
            measured = {b: figures[b] for b in ("batch1", "batch8") if "ms_min" in figures.get(b, {})}
            if not measured:
                note = figures.get("not_available") or figures.get("skipped") or figures.get("error")
                notes = note or "; ".join(
                    f"{b}: {f.get('skipped') or f.get('error')}"
                    for b, f in figures.items()
                    if isinstance(f, dict)
                )
                lines.append(f"| {engine} | {notes} | | | |")
                continue
            cells = [
                f"{measured[b]['ms_min']:.1f}"
                if b in measured
                else str(figures.get(b, {}).get("skipped", "-"))
                for b in ("batch1", "batch8")
            ]
            rate = f"{measured['batch8']['images_per_s']:.1f}" if "batch8" in measured else "-"
            errors = [f["max_rel_err_vs_eager"] for f in measured.values() if "max_rel_err_vs_eager" in f]
            error = f"{max(errors):.1e}" if errors else "-"
            lines.append(f"| {engine} | {cells[0]} | {cells[1]} | {rate} | {error} |")
        ort = vision.get("onnxruntime", {})
        if ort:
            lines += [
                "",
                f"onnxruntime {ort.get('version')}: available providers {ort.get('available_providers')}.",
            ]
        lines.append("")
    generate = report.get("generate", {})
    if generate:
        lines += ["`model.generate`, 16 new tokens, prefill included (the 2026-11-27 measurement):", ""]
        for key, g in generate.items():
            lines.append(f"- {key}: {g['seconds']:.2f} s, {g['tokens_per_s']:.1f} tokens/s")
        lines.append("")
    if "peak_memory_gib" in report:
        lines += [f"Peak GPU memory: {report['peak_memory_gib']:.1f} GiB.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, required=True, help="where to write the JSON report (markdown beside)"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny config (for a CPU test of this script)")
    parser.add_argument("--device", default=None, help="default: cuda if available")
    parser.add_argument(
        "--dtype", choices=["bf16", "fp16", "fp32"], default=None, help="default: bf16 on CUDA, fp32 on CPU"
    )
    parser.add_argument("--new-tokens", type=int, default=16, help="new tokens of the `generate` stage")
    parser.add_argument(
        "--decode-tokens",
        type=int,
        default=None,
        help="new tokens of the throughput stage (64; 8 with --smoke)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs per figure (the least disturbed is kept)"
    )
    parser.add_argument("--onnx", choices=["auto", "off"], default="auto", help="the vision-engine stage")
    parser.add_argument(
        "--compile-budget-s", type=float, default=50.0,
        help="start a torch.compile only while the run is younger than this",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.decode_tokens is None:
        args.decode_tokens = 8 if args.smoke else 64
    if args.decode_tokens < 2:
        parser.error("--decode-tokens must be at least 2 (decode time is that of N tokens minus that of 1)")

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if not args.smoke and device.type != "cuda":
        log("the paper configuration needs a CUDA device (use --smoke for the tiny config)")
        return 2
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[
        args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    ]
    import transformers

    report: dict[str, Any] = {
        "config": "tiny" if args.smoke else "paper",
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "dtype": str(dtype).replace("torch.", ""),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
        "stages": {},
    }
    markdown = args.out.with_suffix(".md")

    def save() -> None:
        report["elapsed_s"] = time.perf_counter() - START
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        try:
            markdown.write_text(summary(report) + "\n")
        except Exception as exc:  # the JSON is what counts; a summary bug must not lose it
            log(f"summary not written ({type(exc).__name__}: {exc})")

    status = 0
    try:
        modules = network_modules()
        config = modules.EarthGPTXConfig.tiny() if args.smoke else modules.EarthGPTXConfig.paper()
        log(f"building {report['config']} on {device} in {report['dtype']} ...")
        torch.manual_seed(0)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            with torch.device(device):
                model, seconds = timed(device, lambda: modules.EarthGPTXForConditionalGeneration(config))
        finally:
            torch.set_default_dtype(previous)
        model.eval()
        report["stages"]["build_s"] = seconds
        report["parameters"] = {
            name: sum(p.numel() for p in getattr(model, name).parameters())
            for name in (
                "vision_tower",
                "prompt_encoder",
                "fusion",
                "multi_modal_projector",
                "language_model",
                "mask_decoder",
            )
        }
        report["parameters"]["total"] = sum(report["parameters"].values())
        log(f"built: {report['parameters']['total'] / 1e9:.3f} B parameters in {seconds:.1f} s")
        save()

        # One forward with 2 prompts and a short instruction, with labels on the last tokens.
        batch = make_batch(modules, config, [2], [12], device, dtype)
        labels = batch["input_ids"].clone()
        labels[:, :-4] = -100
        with torch.no_grad():
            out, seconds = timed(device, lambda: model(**batch, labels=labels))
        report["stages"]["forward_s"] = seconds
        report["forward"] = {
            "seq_len": int(batch["input_ids"].shape[1]),
            "loss": float(out.loss),
            "logits_shape": list(out.logits.shape),
            "image_tokens_shape": list(out.image_tokens.shape),
            "prompt_tokens_shape": list(out.prompt_tokens.shape),
        }
        if not torch.isfinite(out.loss):
            raise RuntimeError(f"forward loss is not finite: {out.loss}")
        log(
            f"forward: seq {report['forward']['seq_len']}, loss {float(out.loss):.3f}, {seconds * 1000:.0f} ms"
        )
        del out
        save()

        report["generate"] = {}
        for counts, words in (([2], [12]), ([2, 0, 1, 3], [12, 5, 20, 8])):
            gen_batch = make_batch(modules, config, counts, words, device, dtype)
            model.generate(**gen_batch, max_new_tokens=2)  # warm-up (kernels, allocator)
            out, seconds = timed(
                device, lambda b=gen_batch: model.generate(**b, max_new_tokens=args.new_tokens)
            )
            # Greedy decoding of a random model may stop early at </s>; count what was produced.
            produced = int((out.sequences != config.text_config.pad_token_id).sum())
            key = f"batch{len(counts)}"
            report["generate"][key] = {
                "prompt_counts": counts,
                "prompt_len": int(gen_batch["input_ids"].shape[1]),
                "new_tokens": args.new_tokens,
                "sequences_shape": list(out.sequences.shape),
                "seconds": seconds,
                "tokens_per_s": produced / seconds,
            }
            log(
                f"generate {key}: {list(out.sequences.shape)} in {seconds:.2f} s ({produced / seconds:.1f} tok/s)"
            )
            save()

        report["throughput"] = {}
        for batch_size in (1, 8):
            key = f"batch{batch_size}"
            try:
                row = throughput(modules, model, device, dtype, batch_size, args.decode_tokens, args.repeats)
            except torch.cuda.OutOfMemoryError as exc:
                row = {"error": f"out of memory: {exc}"[:300]}
            report["throughput"][key] = row
            if "error" not in row:
                log(
                    f"throughput {key}: vision {1000 * min(row['vision_s']):.0f} ms, prefill "
                    f"{1000 * min(row['prefill_s']):.0f} ms, decode {number(row['decode_ms_per_step'])} ms/step = "
                    f"{number(row['decode_tokens_per_s'])} tok/s"
                )
            save()
        if device.type == "cuda":
            report["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            log(f"peak memory {report['peak_memory_gib']:.1f} GiB")
            save()

        if args.onnx == "auto":
            vision_engines(
                modules, model, report, device, dtype, args.repeats, args.compile_budget_s, save, args.smoke
            )
    except Exception as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"
        report["traceback"] = traceback.format_exc()
        log(f"FAILED: {report['error']}")
        status = 1
    report["total_s"] = time.perf_counter() - START
    save()
    log(f"wrote {args.out} and {markdown}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
