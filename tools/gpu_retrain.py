"""Helpers of ``tools/gpu_retrain.sh`` (the stage-14 run on a GPU host).

``python tools/gpu_retrain.py imports``: import every module the run needs (data generation, both renderers,
training, count calibration, evaluation, the scorers) and name each one that is missing, so a host without a
package fails in a second with the package's name instead of minutes later. Exit 1 when one is missing.

``python tools/gpu_retrain.py summary OUT``: a short summary (``OUT/summary.json``) of the reports and logs the run
wrote: the new model's ID acceptance, its OOD ratios and abstention figures, the shipped model's where measured,
and whether the new model may replace the shipped one (every ID target met).
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback
from pathlib import Path
from typing import Any

# The shipped model's in-distribution report (its ID figures; the run measures only its OOD and abstention ones).
SHIPPED_REPORT = Path("models/earthgptx-tiny/eval_report.json")

# What the run imports, in the order the script uses it.
MODULES = (
    "numpy",
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "yaml",
    "tqdm",
    "rasterio",
    "rasterio.features",
    "affine",
    "shapely",
    "pyproj",
    "jsonschema",
    "sacrebleu",
    "earthgptx.data.generate",
    "earthgptx.data.ood_render",
    "earthgptx.training.train",
    "earthgptx.training.calibrate_counts",
    "earthgptx.training.evaluate",
    "earthgptx.answers",
)


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def check_imports() -> int:
    missing: list[str] = []
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # an ImportError, or a broken binary wheel
            missing.append(name)
            say(f"IMPORT FAILED {name}: {type(exc).__name__}: {exc}")
            traceback.print_exc(limit=3)
    try:
        import torch

        say(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}")
        import transformers

        say(f"transformers {transformers.__version__}")
    except Exception:  # already reported above
        pass
    say("imports: all present" if not missing else f"imports: missing {missing}")
    return 1 if missing else 0


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def _figures(report: dict[str, Any] | None) -> dict[str, Any]:
    if report is None:
        return {}
    out: dict[str, Any] = {}
    if report.get("acceptance"):
        out["id_passed"] = report.get("passed")
        out["id"] = {c["task"]: c["value"] for c in report["acceptance"]}
    if report.get("ood"):
        out["ood_ratio"] = {t: e["overall"]["ratio"] for t, e in report["ood"]["comparison"]["tasks"].items()}
        out["ood_ratio_by_modality"] = {
            t: {m: g["ratio"] for m, g in e["by_modality"].items()}
            for t, e in report["ood"]["comparison"]["tasks"].items()
        }
    if report.get("abstention"):
        out["abstention"] = {k: v["accuracy"] for k, v in report["abstention"]["kinds"].items()}
        if "false_abstention" in report["abstention"]:
            out["false_abstention"] = report["abstention"]["false_abstention"]["rate"]
    out["timings_s"] = report.get("timings_s")
    return out


def summary(out_dir: Path) -> int:
    new = _read(out_dir / "eval" / "eval_report.json") or _read(out_dir / "eval" / "eval_report.partial.json")
    shipped = _read(out_dir / "shipped" / "eval_report.partial.json")
    log = _read(out_dir / "training_log.json")
    shipped_figures = _figures(shipped)
    shipped_id = _figures(_read(SHIPPED_REPORT))
    if shipped_id.get("id"):
        shipped_figures = {
            "id": shipped_id["id"],
            "id_passed": shipped_id.get("id_passed"),
            **shipped_figures,
        }
    result: dict[str, Any] = {
        "new_model": _figures(new),
        "shipped_model": shipped_figures,
        "training": None
        if log is None
        else {k: log.get(k) for k in ("steps", "planned_steps", "stopped_by_time_budget", "samples_seen",
                                      "train_records", "final_loss", "timings_s", "hardware", "count_calibration")},
    }  # fmt: skip
    passed = result["new_model"].get("id_passed")
    result["may_replace_shipped"] = bool(passed) and not (new or {}).get("partial", True)
    (out_dir / "summary.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    say(json.dumps(result, indent=2))
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["imports"]:
        return check_imports()
    if argv[:1] == ["summary"] and len(argv) == 2:
        return summary(Path(argv[1]))
    sys.stderr.write(str(__doc__))
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
