"""Benchmark: the EarthGPT-X vision side in ONNX Runtime vs PyTorch eager, on this CPU.

Same model (tiny config, seed 0), same inputs, batch 1 and 8. Both engines get the same number of threads. The
machine is shared, so timings are taken in alternating blocks (eager block, ONNX Runtime block, then the other
order), with a pause between blocks so neither engine's worker threads are still spinning when the other starts;
the *minimum* over all runs estimates the uncontended time and the median is reported alongside. The target is
ONNX Runtime >= 1.5x PyTorch eager at both batch sizes. Per-operator profiles of both engines are written too,
with the share of time spent in the dense kernels (GEMM, convolution, attention) that both run with equivalent
vendor libraries: ``eager_total / eager_dense_kernels`` bounds what any graph-level optimisation can gain.

    ~/.cache/earthgptx/venv/bin/python bench/bench_vision_onnx.py            # writes bench/results/vision_onnx.*
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from earthgptx.model import EarthGPTXConfig, EarthGPTXForConditionalGeneration  # noqa: E402
from earthgptx.model.export_onnx import (  # noqa: E402
    INPUT_NAMES,
    OUTPUT_NAMES,
    EarthGPTXVisionOnnx,
    example_inputs,
    export_vision_onnx,
)

TARGET_RATIO = 1.5


def make_session(path: Path, threads: int, profile: bool = False) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if profile:
        options.enable_profiling = True
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def timed_blocks(
    engines: dict[str, Callable[[], Any]], rounds: int, per_block: int, pause: float
) -> dict[str, list[float]]:
    times: dict[str, list[float]] = collections.defaultdict(list)
    names = list(engines)
    for round_index in range(rounds):
        order = names if round_index % 2 == 0 else names[::-1]
        for name in order:
            time.sleep(pause)
            run = engines[name]
            run()  # one untimed call per block: caches warm after the other engine ran
            for _ in range(per_block):
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    return times


def ort_profile(
    path: Path, feeds: dict[str, np.ndarray], threads: int, runs: int = 10
) -> list[dict[str, Any]]:
    session = make_session(path, threads, profile=True)
    for _ in range(runs):
        session.run(None, feeds)
    trace = json.loads(Path(session.end_profiling()).read_text())
    totals: collections.Counter[str] = collections.Counter()
    counts: collections.Counter[str] = collections.Counter()
    for event in trace:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            op = event["args"]["op_name"]
            totals[op] += event["dur"]
            counts[op] += 1
    whole = sum(totals.values()) or 1
    return [
        {"op": op, "ms_per_run": dur / runs / 1000, "share": dur / whole, "nodes": counts[op] // runs}
        for op, dur in totals.most_common(12)
    ] + [
        {
            "op": "(dense kernels: " + "/".join(DENSE_ORT) + ")",
            "ms_per_run": sum(d for o, d in totals.items() if o in DENSE_ORT) / runs / 1000,
            "share": sum(d for o, d in totals.items() if o in DENSE_ORT) / whole,
            "nodes": sum(c for o, c in counts.items() if o in DENSE_ORT) // runs,
        }
    ]


DENSE_ATEN = (
    "aten::addmm",
    "aten::mm",
    "aten::bmm",
    "aten::mkldnn_convolution",
    "aten::convolution_overrideable",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::slow_conv_transpose2d",
    "aten::_convolution",
)
DENSE_ORT = (
    "MatMul",
    "FusedMatMul",
    "Gemm",
    "Conv",
    "FusedConv",
    "ConvTranspose",
    "Attention",
    "MultiHeadAttention",
)


def eager_profile(run: Callable[[], Any], runs: int = 5) -> dict[str, Any]:
    """Self time per aten op of ``runs`` eager calls, and the share of the dense kernels."""
    from torch.profiler import ProfilerActivity, profile

    run()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(runs):
            run()
    rows = [(e.key, e.self_cpu_time_total, e.count) for e in prof.key_averages()]
    total = sum(t for _, t, _ in rows) or 1
    # aten::_convolution's self time is dispatch only; the kernel is mkldnn_convolution (or the transpose one).
    dense = sum(t for k, t, _ in rows if k in DENSE_ATEN)
    top = sorted(rows, key=lambda r: -r[1])[:12]
    return {
        "ms_per_run": total / runs / 1000,
        "dense_kernel_ms_per_run": dense / runs / 1000,
        "dense_share": dense / total,
        "ops": [
            {"op": k, "ms_per_run": t / runs / 1000, "share": t / total, "calls": c // runs}
            for k, t, c in top
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--prompts", type=int, default=4, help="prompt slots per sample")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument(
        "--per-block", type=int, default=0, help="runs per block (default: 10 at batch 1, 3 at 8)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=sorted({1, min(2, os.cpu_count() or 1)}),
        help="thread counts to measure (each engine gets the same)",
    )
    parser.add_argument("--pause", type=float, default=0.3, help="seconds between blocks")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "vision_onnx")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model = EarthGPTXForConditionalGeneration(EarthGPTXConfig.tiny()).eval()
    wrapper = EarthGPTXVisionOnnx(model).eval()
    size = model.config.image_size
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory() as tmp:
        path = export_vision_onnx(model, Path(tmp) / "vision.onnx")
        results: list[dict[str, Any]] = []
        for threads, batch in [(t, b) for t in args.threads for b in args.batches]:
            torch.set_num_threads(threads)
            session = make_session(path, threads)
            inputs = example_inputs(size, batch, args.prompts, seed=1000 + batch)
            feeds = dict(zip(INPUT_NAMES, (t.numpy() for t in inputs), strict=True))
            with torch.inference_mode():
                expected = [t.numpy() for t in wrapper(*inputs)]
            got = session.run(list(OUTPUT_NAMES), feeds)
            parity = max(
                float(np.abs(g - e).max() / np.abs(e).max()) for g, e in zip(got, expected, strict=True)
            )

            def eager(inputs: tuple[torch.Tensor, ...] = inputs) -> None:
                with torch.inference_mode():
                    wrapper(*inputs)

            def onnxruntime(
                feeds: dict[str, np.ndarray] = feeds, session: ort.InferenceSession = session
            ) -> None:
                session.run(None, feeds)

            per_block = args.per_block or (10 if batch == 1 else 3)
            print(
                f"{threads} thread(s), batch {batch}: timing {args.rounds} rounds x {per_block} runs ...",
                flush=True,
            )  # noqa: T201 (a bench script prints its progress)
            times = timed_blocks(
                {"pytorch_eager": eager, "onnxruntime": onnxruntime}, args.rounds, per_block, args.pause
            )
            row: dict[str, Any] = {
                "threads": threads,
                "batch": batch,
                "prompts": args.prompts,
                "parity_max_rel_err": parity,
                "runs": len(times["onnxruntime"]),
            }
            for name, values in times.items():
                row[f"{name}_ms_min"] = 1000 * min(values)
                row[f"{name}_ms_median"] = 1000 * statistics.median(values)
            row["speedup_min"] = row["pytorch_eager_ms_min"] / row["onnxruntime_ms_min"]
            row["speedup_median"] = row["pytorch_eager_ms_median"] / row["onnxruntime_ms_median"]
            row["target_met"] = row["speedup_min"] >= TARGET_RATIO
            print(f"{threads} thread(s), batch {batch}: profiling both engines ...", flush=True)  # noqa: T201 (a bench script prints its progress)
            row["onnxruntime_profile"] = ort_profile(path, feeds, threads)
            row["eager_profile"] = eager_profile(eager)
            # If ONNX Runtime ran everything but the dense kernels for free, and those no faster than eager:
            row["graph_level_speedup_bound"] = 1.0 / max(row["eager_profile"]["dense_share"], 1e-9)
            results.append(row)
        onnx_mb = path.stat().st_size / 1e6

    report: dict[str, Any] = {
        "benchmark": "vision side (tower + prompt encoder + fusion + projector + mask features), tiny config",
        "method": "alternating blocks, pause between blocks, same thread count; speedup = eager / onnxruntime",
        "target_speedup": TARGET_RATIO,
        "target_met_at_some_thread_count": {
            str(b): any(r["target_met"] for r in results if r["batch"] == b) for b in args.batches
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "versions": {
            "torch": torch.__version__,
            "onnxruntime": ort.__version__,
            "python": platform.python_version(),
        },
        "onnx_file_mb": onnx_mb,
        "parameters": sum(p.numel() for p in wrapper.parameters()),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Vision side: ONNX Runtime vs PyTorch eager (CPU)",
        "",
        f"tiny config, {report['parameters'] / 1e6:.1f} M parameters, {args.prompts} prompt slots, "
        f"same thread count for both engines, torch {torch.__version__}, onnxruntime {ort.__version__}; "
        f"load average {load_before[0]:.2f} before, {report['machine']['loadavg_after'][0]:.2f} after (shared machine).",
        "",
        "| threads | batch | eager min (ms) | ORT min (ms) | speedup (min) | eager median (ms) | ORT median (ms) "
        "| speedup (median) | bound from eager profile | parity (max rel err) | ≥ 1.5× |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['threads']} | {r['batch']} | {r['pytorch_eager_ms_min']:.1f} | {r['onnxruntime_ms_min']:.1f} "
            f"| {r['speedup_min']:.2f}× | {r['pytorch_eager_ms_median']:.1f} | {r['onnxruntime_ms_median']:.1f} "
            f"| {r['speedup_median']:.2f}× | ≤ {r['graph_level_speedup_bound']:.2f}× | {r['parity_max_rel_err']:.1e} "
            f"| {'yes' if r['target_met'] else 'no'} |"
        )
    lines += [
        "",
        "Reading this: *min* is the least-disturbed run of each engine (the machine is shared; when the load "
        "average exceeds the free cores, the 2-thread figures mostly measure scheduling, and the 1-thread rows are "
        "the stable ones). *bound* is `eager time / eager time in dense kernels` (GEMM, convolution, attention): "
        "those kernels are the same kind of vendor code in both engines (oneDNN/MKL vs MLAS), so a graph runtime "
        "that made every other operator free would still be at most that much faster. Where the bound is below "
        f"{TARGET_RATIO}×, the target cannot be met by graph-level optimisation; the profiles below show why.",
    ]
    for r in results:
        ep = r["eager_profile"]
        lines += [
            "",
            f"## Profiles: {r['threads']} thread(s), batch {r['batch']}",
            "",
            f"PyTorch eager: {100 * ep['dense_share']:.0f}% of its time is in dense kernels (GEMM / convolution / "
            f"attention); even if every other operator cost nothing, a graph runtime using kernels of the same speed "
            f"could be at most **{r['graph_level_speedup_bound']:.2f}×** faster.",
            "",
            "| eager op (self time) | ms/run | share | calls |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {p['op']} | {p['ms_per_run']:.2f} | {100 * p['share']:.1f}% | {p['calls']} |"
            for p in ep["ops"]
        ]
        lines += ["", "| ONNX Runtime op | ms/run | share | nodes |", "|---|---|---|---|"]
        lines += [
            f"| {p['op']} | {p['ms_per_run']:.2f} | {100 * p['share']:.1f}% | {p['nodes']} |"
            for p in r["onnxruntime_profile"]
        ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)  # noqa: T201 (a bench script prints its progress)
    return 0 if all(r["target_met"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
