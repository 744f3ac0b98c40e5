"""Evaluate a trained model on the held-out set and write the report per task × modality × prompt type.

Command line (``make eval`` runs the first)::

    python -m earthgptx.training.evaluate --config configs/tiny.yaml --ood --abstention --areas
    python -m earthgptx.training.evaluate --config configs/tiny.yaml --model runs/try --limit 500 --no-fail
    python -m earthgptx.training.evaluate --config configs/tiny.yaml --model runs/try --tasks pixel_grounding --no-fail

The held-out set is generated from ``data.eval_seed`` (never a training seed; the generator is deterministic, so
every host evaluates the same records). Records are encoded once, grouped by task and batched for greedy
``generate``; answers are parsed by the processor and scored by :mod:`earthgptx.training.scoring`. The report is
written to ``<model>/eval_report.json`` and ``<model>/eval_report.md`` (a partial run, with ``--limit`` or ``--tasks``,
writes ``eval_report.partial.json``/``.md`` instead, so it never replaces a full report); the Markdown table and the acceptance
check are printed, and the exit status is 1 when a target is missed (``--no-fail``: always 0). ``--tasks`` keeps
only the named tasks; the targets of the others then count as missed ("task not evaluated").

``--ood`` adds the out-of-distribution split (the second renderer, ``earthgptx.data.ood_render``): its figures
beside the in-distribution ones with the ratio OOD/ID per task and modality; ``--abstention`` adds the negatives
(prompts over background, counts of absent classes, captions of object-free scenes) of the generator with
negatives on; ``--areas`` adds descriptions of large areas that are not one object (a standing query's AOI: the
generator with negatives and areas on, ``data.areas_seed``), scored by ``scoring.area_report``. They are reported
(against the goals of issue 25 where it sets one) and never change the exit status: it stays 1 iff an
in-distribution target is missed. ``--no-id`` skips the in-distribution split (the report is then partial).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from earthgptx.data.generate import SceneOptions
from earthgptx.data.ood_render import ensure_ood_dataset
from earthgptx.data.vocabulary import TASKS
from earthgptx.model import EarthGPTXForConditionalGeneration, EarthGPTXProcessor
from earthgptx.model.processing_earthgptx import EncodedSample, prompt_centroid_grid
from earthgptx.training import scoring
from earthgptx.training.datasets import (
    cpu_workers,
    encode_for_inference,
    ensure_dataset,
    ensure_eval_dataset,
    load_split,
    read_mask,
)
from earthgptx.training.recipe import Recipe, load_recipe

logger = logging.getLogger(__name__)

REPORT_JSON = "eval_report.json"
REPORT_MD = "eval_report.md"
PARTIAL_REPORT_JSON = "eval_report.partial.json"
PARTIAL_REPORT_MD = "eval_report.partial.md"

# Longest answer per task in tokens (+ </s>); generation stops earlier once every answer in a batch has ended.
MAX_NEW_TOKENS: dict[str, int] = {
    "scene_classification": 6,
    "region_classification": 6,
    "counting": 4,
    "attributes": 6,
    "relation": 4,
    "grounding": 12,
    "pixel_grounding": 4,
    "scene_caption": 40,
    "region_caption": 24,
}


def _relation_gap(record: dict[str, Any]) -> float | None:
    """For a relation between two prompts, how far apart their centroids are (``scoring.relation_gap``), from the
    same centroids the processor writes into the question when ``prompt_coordinates`` is on."""
    prompts = record.get("prompts") or []
    if record["task"] != "relation" or len(prompts) < 2:
        return None
    width, height = float(record["width"]), float(record["height"])
    first, second = (prompt_centroid_grid(p, width, height, i) for i, p in enumerate(prompts[:2]))
    return scoring.relation_gap(str(record["answer"].get("relation", "")), first, second)


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def load_model(
    model_dir: str | Path, device: torch.device
) -> tuple[EarthGPTXForConditionalGeneration, EarthGPTXProcessor]:
    """The saved model (cast to float32) and its processor."""
    processor = EarthGPTXProcessor.from_pretrained(model_dir)
    model = EarthGPTXForConditionalGeneration.from_pretrained(str(model_dir)).float().to(device).eval()
    return model, processor


@torch.no_grad()
def predict(
    model: EarthGPTXForConditionalGeneration,
    processor: EarthGPTXProcessor,
    records: Sequence[dict[str, Any]],
    root: Path,
    batch_size: int = 64,
    workers: int = 1,
    progress: bool = True,
    samples: Sequence[EncodedSample] | None = None,
) -> list[dict[str, Any]]:
    """Greedy answers to ``records``: one evaluation row per record (``scoring.row_from_record`` form, with the
    mask IoU already computed for pixel grounding). ``samples`` are the records already encoded for inference
    (``datasets.encode_for_inference``); they are encoded here when not given."""
    device = next(model.parameters()).device
    if samples is None:
        samples = encode_for_inference(records, root, processor, workers, progress)
    by_task: dict[str, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        by_task[str(record["task"])].append(i)
    rows: list[dict[str, Any] | None] = [None] * len(records)
    bar = tqdm(total=len(records), disable=not progress, desc="evaluating", unit="rec", mininterval=2.0)
    size = processor.image_size
    for task, members in by_task.items():
        # Similar lengths in a batch waste less left padding.
        members = sorted(members, key=lambda i: len(samples[i].input_ids))
        for start in range(0, len(members), batch_size):
            chunk = members[start : start + batch_size]
            batch = processor.collate([samples[i] for i in chunk], train=False)
            batch = {k: v.to(device) for k, v in batch.items()}
            generated = model.generate(
                input_ids=batch["input_ids"],
                pixel_values=batch["pixel_values"],
                modality_ids=batch["modality_ids"],
                attention_mask=batch["attention_mask"],
                prompt_masks=batch["prompt_masks"],
                prompt_valid=batch["prompt_valid"],
                max_new_tokens=MAX_NEW_TOKENS.get(task, 48),
            )
            assert generated.sequences is not None
            answers = processor.post_process_generation(
                generated.sequences,
                generated.mask_logits,
                generated.seg_batch_index,
                sizes=[(samples[i].width, samples[i].height) for i in chunk],
            )
            for i, answer in zip(chunk, answers, strict=True):
                record = records[i]
                row = scoring.row_from_record(record, answer.text, gap=_relation_gap(record))
                if task == "pixel_grounding":
                    gt = read_mask(root / record["answer"].get("mask", record.get("mask")), size) > 0
                    pred = answer.masks[0] if answer.masks else None
                    row["mask_iou"] = 0.0 if pred is None else scoring.mask_iou(pred, gt)
                    row.pop("pred_mask", None)
                    row.pop("gt_mask", None)
                rows[i] = row
            bar.update(len(chunk))
    bar.close()
    return [r for r in rows if r is not None]


SPLITS = ("id", "ood", "abstention", "areas")


def _split_records(
    run: Recipe, split: str, workers: int, progress: bool, tasks: Sequence[str] | None, limit: int | None
) -> tuple[Path, list[dict[str, Any]], dict[str, Any]]:
    """The records of one evaluation split, the path of their ``records.jsonl`` and what the report says of them.

    ``id``: the held-out set of ``data.eval_seed`` (the generator, options off); ``ood``: the second renderer's set
    (``earthgptx.data.ood_render``) of ``data.ood_seed``; ``abstention``: the negatives of the generator with
    negatives on and randomisation off, seed ``data.abstention_seed`` (only the records tagged ``negative``)."""
    data = run.data
    if split == "id":
        path = ensure_eval_dataset(data, workers, progress)
        records = load_split(path, data.eval_splits)
        seed, n_scenes = data.eval_seed, data.n_eval_scenes
    elif split == "ood":
        path = ensure_ood_dataset(
            data.ood_dir, data.n_ood_scenes, data.ood_seed, data.chip_size, data.records_per_task
        )
        records = load_split(path, ["all"])
        seed, n_scenes = data.ood_seed, data.n_ood_scenes
    elif split == "abstention":
        path = ensure_dataset(
            data.abstention_dir,
            data.n_abstention_scenes,
            data.abstention_seed,
            data.chip_size,
            data.records_per_task,
            workers,
            progress,
            SceneOptions(negatives=True),
        )
        records = [r for r in load_split(path, ["all"]) if r["answer"].get("negative")]
        seed, n_scenes = data.abstention_seed, data.n_abstention_scenes
    elif split == "areas":
        path = ensure_dataset(
            data.areas_dir,
            data.n_areas_scenes,
            data.areas_seed,
            data.chip_size,
            data.records_per_task,
            workers,
            progress,
            SceneOptions(negatives=True, areas=True),
        )
        records = [r for r in load_split(path, ["all"]) if r["answer"].get("area")]
        seed, n_scenes = data.areas_seed, data.n_areas_scenes
    else:
        raise ValueError(f"unknown evaluation split {split!r}; expected some of {list(SPLITS)}")
    if tasks and split not in ("abstention", "areas"):
        records = [r for r in records if r["task"] in tasks]
    if limit:
        records = records[:limit]
    if not records:
        raise ValueError(f"no {split} evaluation records in {path}")
    meta = {
        "seed": seed,
        "n_scenes": n_scenes,
        "records": len(records),
        "dir": str(path.parent),
        "limit": limit,
    }
    return path, records, meta


def _reference_id_report(path: str | Path | None) -> dict[str, Any] | None:
    if path is None or not Path(path).is_file():
        return None
    report: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
    return report if report.get("tasks") else None


def evaluate(
    run: Recipe,
    model_dir: str | Path,
    limit: int | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    progress: bool = True,
    tasks: Sequence[str] | None = None,
    *,
    splits: Sequence[str] = ("id",),
    report_dir: str | Path | None = None,
    reference_report: str | Path | None = None,
) -> dict[str, Any]:
    """Generate (or reuse) the evaluation sets, answer them, score them, write the report files; returns the report.

    ``splits``: some of ``id`` (the held-out set and its acceptance targets), ``ood`` and ``abstention``. The OOD
    figures are set beside this run's ID figures, or, without ``id``, beside ``reference_report`` (an
    ``eval_report.json``; default: the model folder's). Reports go to ``report_dir`` (default: the model folder);
    a run with ``limit``, ``tasks`` or without ``id`` writes the ``.partial`` names."""
    started = time.perf_counter()
    model_dir = Path(model_dir)
    out_dir = Path(report_dir) if report_dir is not None else model_dir
    unknown_splits = sorted(set(splits) - set(SPLITS))
    if unknown_splits or not splits:
        raise ValueError(f"evaluation splits must be some of {list(SPLITS)}, got {list(splits)}")
    if tasks:
        unknown = sorted(set(tasks) - set(TASKS))
        if unknown:
            raise ValueError(f"unknown tasks {unknown}; tasks are {list(TASKS)}")
    workers = cpu_workers(run.data.workers)
    data = run.data
    chosen = [s for s in SPLITS if s in splits]
    loaded = {s: _split_records(run, s, workers, progress, tasks, limit) for s in chosen}
    torch_device = pick_device(device)
    # Encode (in worker processes) before the model touches the GPU: forked workers and CUDA do not mix.
    processor = EarthGPTXProcessor.from_pretrained(model_dir)
    samples = {
        s: encode_for_inference(records, path.parent, processor, workers, progress)
        for s, (path, records, _) in loaded.items()
    }
    model, processor = load_model(model_dir, torch_device)
    rows: dict[str, list[dict[str, Any]]] = {}
    timings: dict[str, float] = {}
    for split, (path, records, _) in loaded.items():
        logger.info(
            "evaluating %s on %d %s records of %s (%s)", model_dir, len(records), split, path, torch_device
        )
        t0 = time.perf_counter()
        rows[split] = predict(
            model, processor, records, path.parent, batch_size or run.eval.batch_size, workers, progress,
            samples=samples[split],
        )  # fmt: skip
        timings[split] = round(time.perf_counter() - t0, 1)

    if "id" in rows:
        report = scoring.build_report(rows["id"])
        checks = scoring.check_thresholds(report)
        report["acceptance"] = checks
        report["passed"] = all(c["passed"] for c in checks)
        report["eval_data"] = {
            "seed": data.eval_seed,
            "n_scenes": data.n_eval_scenes,
            "splits": list(data.eval_splits),
            "records": len(rows["id"]),
            "train_seed": data.train_seed,
            "limit": limit,
            "tasks": sorted(tasks) if tasks else None,
        }
        id_reference: dict[str, Any] | None = report
        id_source = "this run"
    else:
        report = {"n_rows": 0, "tasks": {}, "acceptance": [], "passed": None, "eval_data": None}
        reference = reference_report if reference_report is not None else model_dir / REPORT_JSON
        id_reference = _reference_id_report(reference)
        id_source = str(reference) if id_reference is not None else "none"
    if "ood" in rows:
        ood_report = scoring.build_report(rows["ood"])
        report["ood"] = {
            "eval_data": loaded["ood"][2],
            "report": ood_report,
            "id_source": id_source,
            "comparison": scoring.ood_comparison(id_reference or {"tasks": {}}, ood_report),
        }
    if "abstention" in rows:
        report["abstention"] = {
            "eval_data": loaded["abstention"][2],
            **scoring.abstention_report(rows["abstention"], rows.get("id", ())),
        }
    if "areas" in rows:
        report["areas"] = {"eval_data": loaded["areas"][2], **scoring.area_report(rows["areas"])}
    report["splits"] = chosen
    report["model_dir"] = str(model_dir)
    report["device"] = str(torch_device)
    report["timings_s"] = {
        **{f"predict_{s}": t for s, t in timings.items()},
        "predict": round(sum(timings.values()), 1),
        "total": round(time.perf_counter() - started, 1),
    }
    head = f"Model `{model_dir.name}`; greedy decoding on {torch_device}; evaluation sets: {', '.join(chosen)}.\n\n"
    if "id" in rows:
        markdown = scoring.report_markdown(report)
        header = (
            f"Model `{model_dir.name}`; held-out set: {len(rows['id'])} records from {data.n_eval_scenes} scenes "
            f"generated with seed {data.eval_seed} (training seed {data.train_seed}); greedy decoding on {torch_device}, "
            f"{timings['id']:.0f} s.\n\n"
        )
        markdown = markdown.replace("\n\n", "\n\n" + header, 1)
    else:
        markdown = f"# Evaluation report (no in-distribution split; ID figures from {id_source})\n\n" + head
    extra = scoring.extra_markdown(report)
    if extra:
        markdown = markdown.rstrip("\n") + "\n\n" + extra
    partial = bool(limit) or bool(tasks) or "id" not in rows
    report["partial"] = partial
    json_name, md_name = (PARTIAL_REPORT_JSON, PARTIAL_REPORT_MD) if partial else (REPORT_JSON, REPORT_MD)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / json_name).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out_dir / md_name).write_text(markdown, encoding="utf-8")
    report["markdown"] = markdown
    report["report_files"] = [str(out_dir / json_name), str(out_dir / md_name)]
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m earthgptx.training.evaluate", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--config", required=True, type=Path, help="the recipe (YAML under configs/)")
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective recipe (base and flags applied) and exit",
    )
    parser.add_argument("--model", help="model directory (default: the config's train.output_dir)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N held-out records")
    parser.add_argument(
        "--tasks", nargs="+", choices=list(TASKS), metavar="TASK", help="evaluate only these tasks"
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument(
        "--workers", type=int, help="processes for data generation and encoding (0: all cores)"
    )
    parser.add_argument("--eval-dir", help="folder of the generated held-out data")
    parser.add_argument("--n-eval-scenes", type=int)
    parser.add_argument(
        "--ood", action="store_true", help="also evaluate the out-of-distribution split (second renderer)"
    )
    parser.add_argument(
        "--abstention", action="store_true", help="also evaluate the abstention split (negatives)"
    )
    parser.add_argument(
        "--areas", action="store_true", help="also evaluate descriptions of large areas (not one object)"
    )
    parser.add_argument(
        "--no-id",
        action="store_true",
        help="skip the in-distribution split (with --ood, --abstention or --areas)",
    )
    parser.add_argument("--ood-dir", help="folder of the generated OOD data")
    parser.add_argument("--abstention-dir", help="folder of the generated abstention data")
    parser.add_argument("--n-ood-scenes", type=int)
    parser.add_argument("--n-abstention-scenes", type=int)
    parser.add_argument("--report-dir", help="write the report files here (default: the model folder)")
    parser.add_argument(
        "--reference-report",
        help="with --no-id: the eval_report.json whose ID figures the OOD ones are set beside "
        "(default: the model folder's)",
    )
    parser.add_argument("--no-fail", action="store_true", help="exit 0 even when a target is missed")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run = load_recipe(args.config)
    if args.workers is not None:
        run.data.workers = args.workers
    if args.eval_dir:
        run.data.eval_dir = args.eval_dir
    if args.n_eval_scenes:
        run.data.n_eval_scenes = args.n_eval_scenes
    if args.ood_dir:
        run.data.ood_dir = args.ood_dir
    if args.abstention_dir:
        run.data.abstention_dir = args.abstention_dir
    if args.n_ood_scenes:
        run.data.n_ood_scenes = args.n_ood_scenes
    if args.n_abstention_scenes:
        run.data.n_abstention_scenes = args.n_abstention_scenes
    splits = [
        s
        for s, on in (
            ("id", not args.no_id),
            ("ood", args.ood),
            ("abstention", args.abstention),
            ("areas", args.areas),
        )
        if on
    ]
    if not splits:
        build_parser().error("--no-id needs --ood, --abstention or --areas")
    if args.print_config:
        sys.stdout.write(run.to_yaml())
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    report = evaluate(
        run,
        args.model or run.train.output_dir,
        limit=args.limit,
        device=args.device,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        tasks=args.tasks,
        splits=splits,
        report_dir=args.report_dir,
        reference_report=args.reference_report,
    )
    # The table is this command's output (make eval), so it goes to stdout.
    sys.stdout.write(report["markdown"] + "\n")
    if report["passed"] is None:
        sys.stdout.write(f"no in-distribution split; reports: {', '.join(report['report_files'])}\n")
        sys.stdout.flush()
        return 0
    verdict = "all acceptance targets met" if report["passed"] else "some acceptance targets missed"
    sys.stdout.write(f"{verdict} ({report['eval_data']['records']} records)\n")
    sys.stdout.flush()
    # Only the in-distribution targets decide the exit status; the OOD and abstention goals are reported.
    return 0 if report["passed"] or args.no_fail else 1


if __name__ == "__main__":
    sys.exit(main())
