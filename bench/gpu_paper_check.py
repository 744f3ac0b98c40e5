"""GPU check of the `paper` configuration (random weights): build, one forward, short generates, optional ORT.

Builds EarthGPT-X `paper` (DINOv2-L/14 + ConvNeXt-L at 448 px + a 7B Llama-shaped LM) directly on CUDA in bf16,
runs one forward pass (448 px chip, 2 visual prompts, a short instruction, with labels so the loss path runs),
then `generate` of 16 new tokens at batch 1 and batch 4 (requests of different text length and prompt count),
and — when onnxruntime has the CUDA execution provider and time allows — the vision side through ONNX Runtime.
Writes timings, parameter counts and peak memory as JSON to ``--out``. Meant to finish in well under 4 minutes
on an H100/H200.

    python bench/gpu_paper_check.py --out bench/results/gpu_paper_check.json
    python bench/gpu_paper_check.py --smoke --out /tmp/smoke.json      # tiny config, any device (CPU test)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from earthgptx.model import EarthGPTXConfig, EarthGPTXForConditionalGeneration  # noqa: E402
from earthgptx.model.processing_earthgptx import rasterize_prompt  # noqa: E402

START = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - START:7.1f}s] {message}", flush=True)  # noqa: T201 (a bench script prints its progress)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def request_ids(config: EarthGPTXConfig, num_prompts: int, words: int, rng: np.random.Generator) -> list[int]:
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


def prompt_masks(size: int, kinds: list[str]) -> torch.Tensor:
    shapes: dict[str, dict[str, Any]] = {
        "box": {"type": "box", "box": [0.2 * size, 0.25 * size, 0.45 * size, 0.6 * size]},
        "point": {"type": "point", "point": [0.7 * size, 0.3 * size]},
        "polygon": {
            "type": "polygon",
            "polygon": [[0.1 * size, 0.7 * size], [0.4 * size, 0.65 * size], [0.3 * size, 0.95 * size]],
        },
        "scribble": {"type": "scribble", "line": [[0.5 * size, 0.5 * size], [0.9 * size, 0.8 * size]]},
    }
    masks = [rasterize_prompt(shapes[k], size, size, size, index=i) for i, k in enumerate(kinds)]
    return torch.from_numpy(np.stack(masks))


def make_batch(
    config: EarthGPTXConfig,
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
            masks[i, :n] = prompt_masks(size, kinds[:n])
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


def timed(device: torch.device, fn: Any) -> tuple[Any, float]:
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return result, time.perf_counter() - start


def onnx_vision_check(
    model: EarthGPTXForConditionalGeneration,
    report: dict[str, Any],
    device: torch.device,
    allow_cpu: bool = False,
) -> None:
    """Vision side through onnxruntime's CUDA EP (fp32 copy of the vision parts), against PyTorch.

    ``allow_cpu`` (the smoke run) goes on with the CPU provider so this code path is exercised without a GPU.
    """
    import copy

    import onnxruntime as ort

    from earthgptx.model.export_onnx import (
        OUTPUT_NAMES,
        EarthGPTXVisionOnnx,
        VisionOnnxRunner,
        example_inputs,
        export_vision_onnx,
    )

    if "CUDAExecutionProvider" not in ort.get_available_providers() and not allow_cpu:
        report["onnx"] = {"skipped": f"onnxruntime {ort.__version__} has no CUDAExecutionProvider"}
        log("onnx: skipped (no CUDAExecutionProvider)")
        return
    wrapper = copy.deepcopy(EarthGPTXVisionOnnx(model)).float().cpu().eval()
    # export_vision_onnx reads the five vision parts and the config off whatever it is given.
    parts = SimpleNamespace(
        vision_tower=wrapper.vision_tower,
        prompt_encoder=wrapper.prompt_encoder,
        fusion=wrapper.fusion,
        multi_modal_projector=wrapper.multi_modal_projector,
        mask_decoder=wrapper.mask_decoder,
        counting_path=wrapper.counting_path,
        config=model.config,
    )
    with tempfile.TemporaryDirectory() as tmp:
        log("onnx: exporting the vision side (fp32) ...")
        path, seconds = timed(device, lambda: export_vision_onnx(parts, Path(tmp) / "vision.onnx"))  # type: ignore[arg-type]
        runner = VisionOnnxRunner(path, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        inputs = example_inputs(model.config.image_size, batch=2, num_prompts=2, seed=7)
        runner.run(*inputs)
        _, ort_seconds = timed(device, lambda: runner.run(*inputs))
        with torch.no_grad():
            reference = [t.numpy() for t in wrapper(*inputs)]
        outputs = runner.run(*inputs)
        errors = {
            name: float(np.abs(outputs[name] - ref).max() / np.abs(ref).max())
            for name, ref in zip(OUTPUT_NAMES, reference, strict=True)
        }
        report["onnx"] = {
            "export_s": seconds,
            "providers": runner.providers,
            "batch2_run_s": ort_seconds,
            "max_rel_err_vs_torch_fp32_cpu": errors,
            "file_mb": sum(p.stat().st_size for p in Path(tmp).iterdir()) / 1e6,
        }
        log(f"onnx: providers {runner.providers}, batch 2 in {ort_seconds * 1000:.1f} ms, rel err {errors}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON report")
    parser.add_argument("--smoke", action="store_true", help="tiny config (for a CPU test of this script)")
    parser.add_argument("--device", default=None, help="default: cuda if available")
    parser.add_argument(
        "--dtype", choices=["bf16", "fp16", "fp32"], default=None, help="default: bf16 on CUDA, fp32 on CPU"
    )
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument(
        "--onnx", choices=["auto", "off"], default="auto", help="vision side through ORT CUDA EP"
    )
    parser.add_argument(
        "--onnx-budget-s", type=float, default=90.0, help="skip ONNX if this much time has passed"
    )
    args = parser.parse_args(argv)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if not args.smoke and device.type != "cuda":
        log("the paper configuration needs a CUDA device (use --smoke for the tiny config)")
        return 2
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[
        args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    ]
    report: dict[str, Any] = {
        "config": "tiny" if args.smoke else "paper",
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "dtype": str(dtype).replace("torch.", ""),
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "stages": {},
    }
    status = 0
    try:
        config = EarthGPTXConfig.tiny() if args.smoke else EarthGPTXConfig.paper()
        log(f"building {report['config']} on {device} in {report['dtype']} ...")
        torch.manual_seed(0)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            with torch.device(device):
                model, seconds = timed(device, lambda: EarthGPTXForConditionalGeneration(config))
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

        # One forward with 2 prompts and a short instruction, with labels on the last tokens.
        batch = make_batch(config, [2], [12], device, dtype)
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

        report["generate"] = {}
        for counts, words in (([2], [12]), ([2, 0, 1, 3], [12, 5, 20, 8])):
            gen_batch = make_batch(config, counts, words, device, dtype)
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
        if device.type == "cuda":
            report["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            log(f"peak memory {report['peak_memory_gib']:.1f} GiB")

        if args.onnx == "auto" and (device.type == "cuda" or args.smoke):
            elapsed = time.perf_counter() - START
            if elapsed > args.onnx_budget_s:
                report["onnx"] = {"skipped": f"{elapsed:.0f} s elapsed > budget {args.onnx_budget_s:.0f} s"}
            else:
                try:
                    onnx_vision_check(model, report, device, allow_cpu=args.smoke)
                except Exception as exc:  # optional stage: record and go on
                    report["onnx"] = {"error": f"{type(exc).__name__}: {exc}"}
                    log(f"onnx: failed ({type(exc).__name__}: {exc})")
    except Exception as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"
        report["traceback"] = traceback.format_exc()
        log(f"FAILED: {report['error']}")
        status = 1
    report["total_s"] = time.perf_counter() - START
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {args.out}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
