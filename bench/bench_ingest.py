"""Ingest of a Sentinel-2-tile-sized scene, upload to event, against a plain ``rio cogeo create`` of the same file.

The scene (10,980 × 10,980 px, 4 bands, uint16, 512 px tiles, deflate; smooth fields plus sensor noise, so it
compresses like imagery rather than like noise or like a constant) is generated here, window by window. Then, in
the same run:
- ``baseline``: ``rio cogeo create`` of the file (the CLI, its defaults: deflate profile, all CPUs), timed;
- ``ingest``: ``python -m services.ingest`` as its own process (throwaway database, buckets and topic; drop
  bucket off), the file POSTed to ``/v1/scenes`` as a streamed raw body, timed from the first byte sent to the
  ``SceneIngested`` event read back from the broker. The process's memory is measured by the kernel: its peak
  resident set (``VmHWM`` in ``/proc/<pid>/status``), also sampled (``VmRSS``) every 50 ms for the curve's maximum.
Targets (issue 22): peak RSS ≤ 1.5 GB; ingest speed ≥ 0.5 × the baseline's (time ratio baseline / ingest).

    python bench/bench_ingest.py [--size 10980] [--bands 4]

Writes bench/results/ingest.json and .md. Needs the local stack (``make up``): PostGIS, Kafka, MinIO.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]  # the library, and the test kits

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import rasterio  # noqa: E402
from kafka import KafkaConsumer, TopicPartition  # noqa: E402
from kits.broker import delete_leftovers  # noqa: E402
from kits.databases import migrated_database  # noqa: E402
from kits.objects import throwaway_object_store  # noqa: E402
from rasterio.windows import Window  # noqa: E402
from tqdm import tqdm  # noqa: E402

from earthgptx.bus.topics import ensure_topics_from_settings  # noqa: E402
from earthgptx.events import decode_event  # noqa: E402
from earthgptx.settings import KafkaSettings, load_stack_env  # noqa: E402
from earthgptx.v1.events_pb2 import SceneIngested  # noqa: E402

RESULTS_DIR = REPO_ROOT / "bench" / "results"
TARGET_RSS_BYTES = 1.5e9
TARGET_SPEED_RATIO = 0.5
BLOCK = 512
NOTES = """
Notes. One run, with the host's two cores shared with other engineers' work (see the load above), so both
times carry that noise; the ratio is from the same run. The two paths do not write identical files: ingest uses
rio-cogeo's deflate profile with the horizontal predictor (integer data) and averaged overviews, the CLI its
defaults (deflate, no predictor, nearest overviews); ingest also hashes the upload, validates, builds the STAC
item, uploads the COG to MinIO, writes the row and waits for the broker's acknowledgement. The peak RSS is the
kernel's high-water mark of the whole ingest process since it started (imports and the HTTP server included).
"""


def make_scene(path: Path, size: int, bands: int) -> None:
    """A tiled, deflate-compressed uint16 GeoTIFF (UTM 33N, 10 m), written one block row at a time."""
    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": bands, "dtype": "uint16", "crs": "EPSG:32633",
        "transform": rasterio.transform.from_origin(300_000, 5_100_000, 10, 10), "tiled": True,
        "blockxsize": BLOCK, "blockysize": BLOCK, "compress": "deflate", "predictor": 2, "BIGTIFF": "IF_SAFER",
    }  # fmt: skip
    rng = np.random.default_rng(0)
    x = np.arange(size, dtype=np.float32)
    with rasterio.open(path, "w", **profile) as dst:
        for index, name in enumerate(("blue", "green", "red", "nir")[:bands], start=1):
            dst.set_band_description(index, name)
        for row in tqdm(range(0, size, BLOCK), desc="generating the scene", unit="block row"):
            height = min(BLOCK, size - row)
            y = np.arange(row, row + height, dtype=np.float32)[:, None]
            field = 1500 + 600 * np.sin(x / 700.0) * np.cos(y / 900.0) + 300 * np.sin((x + y) / 150.0)
            data = np.empty((bands, height, size), dtype=np.uint16)
            for band in range(bands):
                noise = rng.normal(0, 40, (height, size)).astype(np.float32)
                data[band] = np.clip(field * (0.8 + 0.15 * band) + noise, 1, 65535).astype(np.uint16)
            dst.write(data, window=Window(0, row, size, height))


def baseline(source: Path, folder: Path) -> float:
    rio = Path(sys.executable).with_name("rio")
    target = folder / "baseline_cog.tif"
    started = time.perf_counter()
    subprocess.run([str(rio), "cogeo", "create", str(source), str(target)], check=True, capture_output=True)
    elapsed = time.perf_counter() - started
    target.unlink()
    return elapsed


class Memory:
    """Samples a process's VmRSS every ``period_s``; ``peak`` also reads the kernel's VmHWM."""

    def __init__(self, pid: int, period_s: float = 0.05) -> None:
        self.pid, self.period_s, self.samples_max, self._stop = pid, period_s, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _field(self, name: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples_max = max(self.samples_max, self._field("VmRSS"))
            except FileNotFoundError:
                return
            self._stop.wait(self.period_s)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> int:
        """The kernel's peak resident set of the process (VmHWM), in bytes."""
        self._stop.set()
        self._thread.join()
        return self._field("VmHWM")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _chunks(path: Path, size: int = 1024 * 1024) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while block := handle.read(size):
            yield block


def run_ingest(source: Path, folder: Path, kafka: KafkaSettings) -> dict[str, float]:
    unique = uuid.uuid4().hex[:10]
    topic = f"scenes.ingested.bench.{unique}"
    port = _free_port()
    ensure_topics_from_settings(kafka, [topic])
    with migrated_database("egx_bench") as db_url, throwaway_object_store("egx-bench") as objects:
        env = {
            **os.environ, "EGX_DB_URL": db_url, "EGX_S3_SCENES_BUCKET": objects.settings.scenes_bucket,
            "EGX_S3_CHIPS_BUCKET": objects.settings.chips_bucket, "EGX_INGEST_PORT": str(port),
            "EGX_INGEST_OUTPUT_TOPIC": topic, "EGX_INGEST_DROP_ENABLED": "false", "EGX_INGEST_WORKDIR": str(folder),
            "EGX_INGEST_MAX_UPLOAD_BYTES": str(8 * 1024**3), "EGX_INGEST_LOG_FORMAT": "text",
        }  # fmt: skip
        log = open(folder / "ingest.log", "w")  # noqa: SIM115 - closed below
        process = subprocess.Popen([sys.executable, "-m", "services.ingest"], cwd=REPO_ROOT, env=env,
                                   stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the ingest service did not start; see {folder / 'ingest.log'}")
                time.sleep(0.2)
            idle_rss = Memory(process.pid)._field("VmRSS")
            consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap.split(","), enable_auto_commit=False)
            partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
            consumer.assign(partitions)
            consumer.seek_to_end(*partitions)
            for tp in partitions:
                consumer.position(tp)
            memory = Memory(process.pid)
            memory.start()
            started = time.perf_counter()
            response = httpx.post(
                f"{url}/v1/scenes", content=_chunks(source), timeout=600,
                headers={"Content-Type": "image/tiff", "Content-Length": str(source.stat().st_size)},
                params={"modality": "multispectral", "sensor": "bench", "source": "bench"},
            )  # fmt: skip
            accepted_s = time.perf_counter() - started
            if response.status_code != 202:
                raise RuntimeError(f"upload answered {response.status_code}: {response.text}")
            scene_id = response.json()["scene_id"]
            event: SceneIngested | None = None
            while event is None and time.perf_counter() - started < 1200:
                for batch in consumer.poll(timeout_ms=200).values():
                    for record in batch:
                        decoded = decode_event(SceneIngested, record.value)
                        if decoded.scene_id == scene_id:
                            event = decoded
                if process.poll() is not None:
                    raise RuntimeError(f"the ingest service died; see {folder / 'ingest.log'}")
            elapsed = time.perf_counter() - started
            peak = memory.stop()
            consumer.close()
            if event is None:
                raise RuntimeError("no SceneIngested within 20 minutes")
            return {
                "upload_to_event_s": elapsed, "upload_to_202_s": accepted_s, "peak_rss_bytes": float(peak),
                "sampled_max_rss_bytes": float(memory.samples_max), "idle_rss_bytes": float(idle_rss),
                "cog_bytes": float(event.cog.size_bytes),
            }  # fmt: skip
        finally:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
            log.close()
            delete_leftovers(kafka, unique)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=10_980)
    parser.add_argument("--bands", type=int, default=4)
    args = parser.parse_args()
    load_stack_env(REPO_ROOT / ".stack")
    kafka = KafkaSettings()
    folder = Path(tempfile.mkdtemp(prefix="egx-bench-ingest-"))
    try:
        source = folder / "scene.tif"
        started = time.perf_counter()
        make_scene(source, args.size, args.bands)
        generate_s = time.perf_counter() - started
        source_bytes = source.stat().st_size
        baseline_s = baseline(source, folder)
        ingest = run_ingest(source, folder, kafka)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    ratio = baseline_s / ingest["upload_to_event_s"]
    result = {
        "benchmark": "ingest", "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_1m_at_end": os.getloadavg()[0]},
        "scene": {"width": args.size, "height": args.size, "bands": args.bands, "dtype": "uint16",
                  "bytes": source_bytes, "tile": BLOCK, "compress": "deflate"},
        "generate_s": generate_s, "baseline_rio_cogeo_create_s": baseline_s, **ingest,
        "speed_ratio": ratio,
        "targets": {"peak_rss_bytes_max": TARGET_RSS_BYTES, "speed_ratio_min": TARGET_SPEED_RATIO},
        "met": {"rss": ingest["peak_rss_bytes"] <= TARGET_RSS_BYTES, "speed": ratio >= TARGET_SPEED_RATIO},
    }  # fmt: skip
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "ingest.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS_DIR / "ingest.md").write_text(
        "# Ingest: upload to event vs `rio cogeo create` (one run)\n\n"
        f"Scene: {args.size} x {args.size} px, {args.bands} bands uint16, {BLOCK} px tiles, deflate "
        f"({ingest['cog_bytes'] / 1e6:.0f} MB as COG). Host: {os.cpu_count()} CPUs, shared with other work "
        f"(load {result['host']['load_1m_at_end']:.1f} at the end).\n\n"
        "| measure | value | target |\n|---|---|---|\n"
        f"| `rio cogeo create` (CLI defaults) | {baseline_s:.1f} s | |\n"
        f"| ingest, first byte sent to `SceneIngested` read back | {ingest['upload_to_event_s']:.1f} s | |\n"
        f"| of which upload + validation until `202` | {ingest['upload_to_202_s']:.1f} s | |\n"
        f"| speed ratio (baseline time / ingest time) | {ratio:.2f} | ≥ {TARGET_SPEED_RATIO} |\n"
        f"| ingest process peak RSS (kernel VmHWM) | {ingest['peak_rss_bytes'] / 1e9:.2f} GB | ≤ 1.5 GB |\n"
        f"| ingest process max sampled RSS (50 ms) | {ingest['sampled_max_rss_bytes'] / 1e9:.2f} GB | |\n"
        f"| ingest process RSS when idle | {ingest['idle_rss_bytes'] / 1e9:.2f} GB | |\n\n"
        f"Targets met: RSS {result['met']['rss']}, speed {result['met']['speed']}.\n"
        + NOTES
    )
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0 if all(result["met"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
