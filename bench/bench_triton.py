"""Answers per second through Triton at 1, 4, 8 and 16 concurrent clients, against the same model in process.

    python bench/bench_triton.py [--records 48] [--url 127.0.0.1:58001]

Both sides answer the same held-out records (the held-out seed's scenes) with greedy decoding:
- Triton: ``c`` concurrent gRPC asyncio clients call the entry model ``earthgptx`` (raw bands in, parsed answer
  out), so its dynamic batchers and the batched generation of ``llm`` see up to ``c`` requests at once;
- in process: the checkpoint's ``model.generate`` on batches of ``c`` records (processor included), the batching
  an application would do itself at that concurrency.
Where the time goes is read from Triton's own statistics (per model: queue, compute input/infer/output) taken
before and after each level. One run; results to ``bench/results/triton.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from earthgptx.data.generate import generate_dataset  # noqa: E402
from earthgptx.model import EarthGPTXForConditionalGeneration, EarthGPTXProcessor  # noqa: E402
from earthgptx.serving.client import AsyncTritonClient  # noqa: E402
from earthgptx.serving.requests import ServingRequest  # noqa: E402
from earthgptx.settings import load_stack_env  # noqa: E402
from earthgptx.training.datasets import collate_records, read_image  # noqa: E402

CHECKPOINT = REPO_ROOT / "models" / "earthgptx-tiny"
RESULTS = REPO_ROOT / "bench" / "results"
LEVELS = (1, 4, 8, 16)
MAX_NEW_TOKENS = 48
MODELS = ("earthgptx", "vision_encoder", "llm")


def held_out_records(folder: Path, count: int) -> list[dict[str, Any]]:
    path = generate_dataset(folder, n_scenes=max(2, count // 30 + 1), seed=90210, progress=False)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return records[:count]


def request_of(folder: Path, record: dict[str, Any]) -> ServingRequest:
    bands = read_image(folder / record["image"]).astype(np.float32)
    return ServingRequest(
        bands=bands,
        modality=record["modality"],
        band_names=list(record["bands"]),
        prompts=list(record.get("prompts", [])),
        instruction=record["conversations"][0]["value"],
        max_new_tokens=MAX_NEW_TOKENS,
    )


async def triton_level(url: str, requests: list[ServingRequest], clients: int) -> tuple[float, list[str]]:
    client = AsyncTritonClient(url, timeout_s=600.0)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(requests)):
        queue.put_nowait(index)
    texts = [""] * len(requests)

    async def worker() -> None:
        while not queue.empty():
            index = queue.get_nowait()
            texts[index] = (await client.answer(requests[index])).text

    await client.answer(requests[0])  # warm-up
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    await client.close()
    return elapsed, texts


def model_statistics(http_url: str) -> dict[str, dict[str, float]]:
    import tritonclient.http as http_module

    client = http_module.InferenceServerClient(http_url)
    stats: dict[str, dict[str, float]] = {}
    for entry in client.get_inference_statistics()["model_stats"]:
        if entry["name"] not in MODELS:
            continue
        infer = entry["inference_stats"]
        stats[entry["name"]] = {
            "executions": float(entry.get("execution_count", 0)),
            "inferences": float(entry.get("inference_count", 0)),
            **{
                f"{key}_s": float(infer[key]["ns"]) / 1e9
                for key in ("queue", "compute_input", "compute_infer", "compute_output")
            },  # fmt: skip
        }
    client.close()
    return stats


def difference(
    after: dict[str, dict[str, float]], before: dict[str, dict[str, float]]
) -> dict[str, dict[str, float]]:
    return {m: {k: after[m][k] - before.get(m, {}).get(k, 0.0) for k in after[m]} for m in after}


def in_process_level(
    model: EarthGPTXForConditionalGeneration,
    processor: EarthGPTXProcessor,
    folder: Path,
    records: list[dict[str, Any]],
    batch_size: int,
) -> tuple[float, list[str]]:
    texts: list[str] = []
    chunk = records[:batch_size]
    model.generate(
        **collate_records(chunk, folder, processor, train=False), max_new_tokens=MAX_NEW_TOKENS
    )  # warm-up
    started = time.perf_counter()
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        batch = collate_records(chunk, folder, processor, train=False)
        generated = model.generate(**batch, max_new_tokens=MAX_NEW_TOKENS)
        answers = processor.post_process_generation(
            generated.sequences, generated.mask_logits, generated.seg_batch_index
        )
        texts += [a.text for a in answers]
    return time.perf_counter() - started, texts


def main(argv: list[str] | None = None) -> int:
    load_stack_env(REPO_ROOT / ".stack")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=48)
    parser.add_argument("--url", default=os.environ.get("EGX_TRITON_GRPC_URL", "127.0.0.1:58001"))
    parser.add_argument("--http-url", default=os.environ.get("EGX_TRITON_HTTP_URL", "127.0.0.1:58000"))
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the in-process model")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="egx-bench-triton-") as scratch:
        return run(Path(scratch), args)


def run(folder: Path, args: argparse.Namespace) -> int:
    records = held_out_records(folder, args.records)
    requests = [request_of(folder, r) for r in records]
    torch.set_num_threads(args.threads)
    model = EarthGPTXForConditionalGeneration.from_pretrained(str(CHECKPOINT), dtype=torch.float32).eval()
    processor = EarthGPTXProcessor.from_pretrained(CHECKPOINT)

    rows = []
    for level in LEVELS:
        before = model_statistics(args.http_url)
        triton_s, triton_texts = asyncio.run(triton_level(args.url, requests, level))
        profile = difference(model_statistics(args.http_url), before)
        local_s, local_texts = in_process_level(model, processor, folder, records, level)
        same = sum(a == b for a, b in zip(triton_texts, local_texts, strict=True))
        rows.append(
            {
                "clients": level,
                "triton_answers_per_s": len(records) / triton_s,
                "in_process_answers_per_s": len(records) / local_s,
                "triton_over_in_process": local_s / triton_s,
                "same_answers": same,
                "triton_profile": profile,
            }
        )
        print(
            f"{level:>2} clients: triton {len(records) / triton_s:.2f}/s, in process {len(records) / local_s:.2f}/s"
        )

    one = rows[0]["triton_answers_per_s"]
    eight = next(r for r in rows if r["clients"] == 8)
    result = {
        "benchmark": "bench_triton",
        "records": len(records),
        "max_new_tokens": MAX_NEW_TOKENS,
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "load_average": os.getloadavg()},
        "levels": rows,
        "scaling_8_over_1": eight["triton_answers_per_s"] / one,
        "targets": {"scaling_8_over_1": 3.0, "triton_over_in_process": 0.9},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "triton.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Triton vs in process: answers/s (`bench/bench_triton.py`)",
        "",
        f"{len(records)} held-out records, greedy, up to {MAX_NEW_TOKENS} new tokens; one run on a "
        f"{os.cpu_count()}-CPU host (load average at the end {os.getloadavg()[0]:.1f}).",
        "",
        "| clients | Triton answers/s | in process answers/s (batch = clients) | Triton / in process | same answers |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['clients']} | {r['triton_answers_per_s']:.2f} | {r['in_process_answers_per_s']:.2f} | "
            f"{r['triton_over_in_process']:.2f} | {r['same_answers']}/{len(records)} |"
        )
    lines += [
        "",
        f"8 clients over 1 client through Triton: {result['scaling_8_over_1']:.2f}x (target 3x).",
        "",
    ]
    lines += ["Where Triton's time went (seconds summed over requests; from Triton's statistics):", ""]
    lines += ["| clients | model | executions | inferences | queue | compute input | compute infer | compute output |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        for name in MODELS:
            p = r["triton_profile"].get(name)
            if p:
                lines.append(
                    f"| {r['clients']} | {name} | {p['executions']:.0f} | {p['inferences']:.0f} | {p['queue_s']:.2f} | "
                    f"{p['compute_input_s']:.2f} | {p['compute_infer_s']:.2f} | {p['compute_output_s']:.2f} |"
                )
    (RESULTS / "triton.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
