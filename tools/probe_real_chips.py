"""Ask the served model about chips of a real image, where the truth is known without labels.

    python -m tools.probe_real_chips [--url 127.0.0.1:58000] [--chips 6] [--out report.json]

The sample is ``bahamas_rgb.tif`` (3-band uint8 true colour, 300 m pixels, UTM 18N; `make up` fetches it into the
cache): open sea, shallow banks, islands and cloud, where no ship, airplane, building, vehicle or storage tank can
be seen at that pixel size. Each of ``--chips`` 128 x 128 chips on a grid over the scene gets four questions
through Triton's entry model, as the inference service sends them: a caption, the land cover, "how many ships",
and a box over the chip's centre classified. An honest model names no object in a caption, counts 0 ships and
answers the box with ``no object``. Prints a table and writes the answers as JSON. Needs the stack (`make up`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from earthgptx.serving.answers import ServingRequest
from earthgptx.serving.client import answer_many_http
from earthgptx.settings import load_stack_env

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = "bahamas_rgb.tif"
CHIP = 128
QUESTIONS: tuple[tuple[str, str, list[dict[str, Any]]], ...] = (
    ("caption", "Describe this image in one sentence.", []),
    ("land cover", "What is the dominant land cover in this image?", []),
    ("ships", "How many ships are there in the image?", []),
    ("centre box", "What is the object in <region1>?", [{"type": "box", "box": [48, 48, 80, 80]}]),
)
OBJECT_WORDS = ("ship", "airplane", "building", "vehicle", "storage tank")


def chip_windows(width: int, height: int, count: int) -> list[Window]:
    """``count`` chips on a regular grid (row-major), inside the image."""
    columns = int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / columns))
    xs = np.linspace(0, width - CHIP, columns).astype(int)
    ys = np.linspace(0, height - CHIP, rows).astype(int)
    return [Window(int(x), int(y), CHIP, CHIP) for y in ys for x in xs][:count]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None, help="Triton's HTTP address (default: the stack's)")
    parser.add_argument("--chips", type=int, default=6)
    parser.add_argument("--sample", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    load_stack_env(fallback=REPO_ROOT / ".stack")
    url = args.url or os.environ.get("EGX_TRITON_HTTP_URL", "127.0.0.1:58000")
    cache = Path(os.environ.get("EGX_CACHE", Path.home() / ".cache" / "earthgptx"))
    sample = args.sample or cache / "samples" / "localtileserver" / SAMPLE
    if not sample.exists():
        print(f"{sample} is missing; `make up` fetches it", file=sys.stderr)  # noqa: T201
        return 2
    rows: list[dict[str, Any]] = []
    with rasterio.open(sample) as src:
        windows = chip_windows(src.width, src.height, args.chips)
        requests, keys = [], []
        for window in windows:
            bands = src.read(window=window).astype(np.float32)
            for name, instruction, prompts in QUESTIONS:
                requests.append(
                    ServingRequest(
                        bands=bands,
                        modality="optical",
                        band_names=["red", "green", "blue"],
                        prompts=prompts,
                        instruction=instruction,
                    )  # fmt: skip
                )
                keys.append((f"{int(window.col_off)},{int(window.row_off)}", name))
    answers = answer_many_http(url, requests)
    by_chip: dict[str, dict[str, str]] = {}
    for (chip, name), answer in zip(keys, answers, strict=True):
        text = answer.text if hasattr(answer, "text") else f"error: {answer}"
        by_chip.setdefault(chip, {})[name] = text
    version = next((a.model_version for a in answers if hasattr(a, "model_version")), "?")
    for chip, got in by_chip.items():
        caption = got["caption"].lower()
        rows.append({
            "chip": chip, **got,
            "caption_names_an_object": any(word in caption for word in OBJECT_WORDS),
            "ships_counted_0": got["ships"].strip() in {"0", "zero"},
            "centre_box_abstains": got["centre box"].strip().lower() == "no object",
        })  # fmt: skip
    summary = {
        "model_version": version, "sample": SAMPLE, "chips": len(rows),
        "captions_naming_an_object": sum(r["caption_names_an_object"] for r in rows),
        "ship_counts_of_0": sum(r["ships_counted_0"] for r in rows),
        "centre_boxes_answered_no_object": sum(r["centre_box_abstains"] for r in rows),
        "answers": rows,
    }  # fmt: skip
    print(f"model {version}, {len(rows)} chips of {SAMPLE} (column,row of the chip's corner):")  # noqa: T201
    for row in rows:
        print(  # noqa: T201
            f"- {row['chip']}: caption {row['caption']!r}; land cover {row['land cover']!r}; "
            f"ships {row['ships']!r}; centre box {row['centre box']!r}"
        )
    print(  # noqa: T201
        f"captions naming an object {summary['captions_naming_an_object']}/{len(rows)}, ship counts of 0 "
        f"{summary['ship_counts_of_0']}/{len(rows)}, centre boxes answered no object "
        f"{summary['centre_boxes_answered_no_object']}/{len(rows)}"
    )
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
