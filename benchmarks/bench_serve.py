"""`siamcli serve` under concurrent load, next to the in-process numbers it is judged against.

One run measures, on the same machine and the same query images (sample_data/queries):

  * the served API: a real `siamcli serve` process on a loopback port, driven by N concurrent
    clients (1, 4, 16, 64) for a bounded number of requests each level (one image per request,
    k = 5): p50/p95/p99 latency, images/s, and the mean micro-batch size (from /metrics);
  * (a) `model.predict` throughput on the same images, decoded and resized in memory
    (measured in rounds interleaved with the 16-client level);
  * (ref) one query in-process: decode + resize, one forward pass (`embed`), one FAISS search
    (one before each request of the 1-client level, so that both see the same load);
  * (b) `siamcli query IMAGE` run once per image (a new process each time).

Targets (issue 14): served images/s at 16 clients ≥ 0.7 × (a); p50 latency of one client
≤ 1.3 × (ref). Both ratios are printed. The clients are a minimal HTTP/1.1 keep-alive client on
asyncio streams with the multipart bodies encoded in advance, so the load generator takes as
little as possible of the CPU it shares with the server.

    python benchmarks/bench_serve.py                          # untrained 64 px model over sample_data/gallery
    python benchmarks/bench_serve.py --model runs/demo --requests 400
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

QUERIES = REPO / "sample_data" / "queries"
GALLERY = REPO / "sample_data" / "gallery"
BOUNDARY = "siamcli-bench"
SERVE_ARGS: list[str] = []  # extra `siamcli serve` options (--serve-args)
SERVE_ENV: dict[str, str] = {}
ROUNDS = 8  # each level is measured in this many rounds, interleaved with its reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="run directory with an index (default: an untrained model built here)")
    parser.add_argument("--image-size", type=int, default=64, help="side of the untrained model built when --model is absent")
    parser.add_argument("--clients", default="1,4,16,64", help="concurrency levels")
    parser.add_argument("--requests", type=int, default=240, help="requests per level (one image each)")
    parser.add_argument("--cli-images", type=int, default=3, help="images for the `siamcli query` per-image baseline")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    parser.add_argument("--serve-args", default="", help="extra options for `siamcli serve`, e.g. '--batch-wait-ms 5'")
    args = parser.parse_args()
    SERVE_ARGS.extend(args.serve_args.split())
    if os.environ.get("BENCH_SERVER_INTRAOP"):
        SERVE_ENV["TF_NUM_INTRAOP_THREADS"] = os.environ["BENCH_SERVER_INTRAOP"]

    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        run = Path(args.model) if args.model else untrained_run(Path(tmp), args.image_size)
        images = [p.read_bytes() for p in sorted(QUERIES.glob("*.png"))]
        levels, reference = served(run, images, [int(c) for c in args.clients.split(",")], args.requests, Path(tmp), Reference(run, images))
        cli = cli_per_image(run, sorted(QUERIES.glob("*.png"))[: args.cli_images])
    load.append(os.getloadavg()[0])
    report = table(reference, cli, levels, args.model or f"an untrained {args.image_size} px run built by this benchmark", load)
    print(report)
    if args.out:
        args.out.write_text(report)


def untrained_run(base: Path, image_size: int) -> Path:
    """An untrained run (ResNet50, weights=None) at `image_size` with its index over sample_data/gallery."""
    from conftest import build_untrained_run

    from siamcli.index.build import IndexOptions, build_index

    labels = sorted(p.name for p in GALLERY.iterdir() if p.is_dir())
    run = build_untrained_run(base / "run", GALLERY, val=[], train=labels, image_size=image_size, embedding_dim=128)
    build_index(IndexOptions(gallery=str(GALLERY), model=str(run)))
    return run


# ---------------------------------------------------------------- in-process references


class Reference:
    """(a) model.predict images/s on decoded images; (ref) decode + forward + search of one image."""

    def __init__(self, run: Path, images: list[bytes]):
        from siamcli.index.store import load_index
        from siamcli.models.embed import model_image_size
        from siamcli.models.embedding import load_embedding_model

        self.images = images
        self.model = load_embedding_model(run / "model.keras")
        self.loaded = load_index(run / "index")
        self.size = model_image_size(self.model)
        self.decoded = np.concatenate([pixels(data, self.size) for data in images])
        self.model.predict(self.decoded, batch_size=32, verbose=0)  # warm up both paths
        self.query_times(5)

    def predict_rate(self, count: int = 256) -> float:
        batch = self.decoded[np.arange(count) % len(self.decoded)]
        started = time.perf_counter()
        self.model.predict(batch, batch_size=32, verbose=0)
        return count / (time.perf_counter() - started)

    def query_times(self, count: int) -> list[float]:
        from siamcli.index.search import search_vectors
        from siamcli.models.embed import embed

        times = []
        for i in range(count):
            started = time.perf_counter()
            search_vectors(self.loaded, embed(self.model, pixels(self.images[i % len(self.images)], self.size)).vectors, 5)
            times.append(time.perf_counter() - started)
        return times


def pixels(data: bytes, size: int) -> np.ndarray:
    """(1, S, S, 3) float32: decode_bytes and the pipeline's resize, as the server and `siamcli query` do."""
    from siamcli.serve.images import decode_upload, resize_batch

    return resize_batch([decode_upload(data, "query", size)], size)


def cli_per_image(run: Path, paths: list[Path]) -> float:
    """Seconds per image of `siamcli query IMAGE` (a new process for each)."""
    times = []
    for path in paths:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "siamcli", "query", str(path), "--index", str(run / "index"), "--json"],
                       check=True, capture_output=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
        times.append(time.perf_counter() - started)
    return float(np.mean(times))


# ---------------------------------------------------------------- the served API


def served(run: Path, images: list[bytes], levels: list[int], requests: int, tmp: Path, reference: Reference) -> tuple[list[dict], dict]:
    """Each level in ROUNDS rounds, each round right after a reference measurement: the machine's
    load drifts (other processes), and both sides of a ratio should see the same drift."""
    log = tmp / "server.log"
    with open(log, "w") as handle:
        server = subprocess.Popen([sys.executable, "-m", "siamcli", "serve", "--index", str(run / "index"), "--port", "0",
                                   "--log-level", "warning", *SERVE_ARGS], stderr=handle, stdout=subprocess.DEVNULL, cwd=REPO,
                                  env={**os.environ, "PYTHONPATH": str(REPO), **SERVE_ENV})
    try:
        url = wait_for_url(log, server)
        bodies = [multipart(f"q{i}.png", data) for i, data in enumerate(images)]
        asyncio.run(drive(url, bodies, 4, 40))  # warm up
        results, rates, one = [], [], []
        for clients in levels:
            before, latencies, wall = batch_totals(url), [], 0.0
            for _ in range(ROUNDS):
                if clients == 16:
                    rates.append(reference.predict_rate())
                between = (lambda: one.extend(reference.query_times(1))) if clients == 1 else None  # pairs, same moment
                started = time.perf_counter()
                latencies += asyncio.run(drive(url, bodies, clients, requests // ROUNDS, between))
                wall += time.perf_counter() - started - (sum(one[-(requests // ROUNDS):]) if between else 0.0)
            after = batch_totals(url)
            mean_batch = (after[0] - before[0]) / max(1, after[1] - before[1])
            results.append({"clients": clients, "requests": len(latencies), "rate": len(latencies) / wall, "batch": mean_batch,
                            **{f"p{q}": float(np.percentile(latencies, q)) for q in (50, 95, 99)}})
        rates = rates or [reference.predict_rate() for _ in range(ROUNDS)]
        one = one or reference.query_times(40)
        return results, {"predict_rate": float(np.mean(rates)), "one_query_s": float(np.median(one)), "image_size": reference.size}
    finally:
        server.terminate()
        server.wait(timeout=60)


def wait_for_url(log: Path, server: subprocess.Popen, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"on (http://[\w.:]+)", log.read_text())
        if found:
            return found.group(1)
        if server.poll() is not None:
            raise SystemExit(f"siamcli serve exited:\n{log.read_text()}")
        time.sleep(0.2)
    raise SystemExit("siamcli serve did not start")


def multipart(name: str, data: bytes, k: int = 5) -> bytes:
    return (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="k"\r\n\r\n{k}\r\n'
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="images"; filename="{name}"\r\n'
            "Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


async def drive(url: str, bodies: list[bytes], clients: int, requests: int, between=None) -> list[float]:
    """`clients` keep-alive connections sending `requests` queries in all; latency of each.
    `between()`, if given (one client), runs before each request: the in-process reference."""
    address = urlsplit(url)
    counter = iter(range(requests))
    latencies: list[float] = []

    async def client() -> None:
        reader, writer = await asyncio.open_connection(address.hostname, address.port)
        try:
            for i in counter:
                if between is not None:
                    between()
                body = bodies[i % len(bodies)]
                head = (f"POST /api/v1/query HTTP/1.1\r\nHost: {address.netloc}\r\nContent-Length: {len(body)}\r\n"
                        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n").encode()
                started = time.perf_counter()
                writer.write(head + body)
                status = await read_response(reader)
                latencies.append(time.perf_counter() - started)
                if status != 200:
                    raise SystemExit(f"request failed with HTTP {status}")
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


async def read_response(reader: asyncio.StreamReader) -> int:
    header = await reader.readuntil(b"\r\n\r\n")
    status = int(header.split(b" ", 2)[1])
    length = int(re.search(rb"(?i)content-length: *(\d+)", header).group(1))
    await reader.readexactly(length)
    return status


def batch_totals(url: str) -> tuple[float, float]:
    """(images, batches) embedded so far, from /metrics."""
    import urllib.request

    text = urllib.request.urlopen(f"{url}/metrics", timeout=30).read().decode()
    total = float(re.search(r"^siamcli_batch_images_sum (\S+)", text, re.M).group(1))
    count = float(re.search(r"^siamcli_batch_images_count (\S+)", text, re.M).group(1))
    return total, count


# ---------------------------------------------------------------- the table


def table(reference: dict, cli_seconds: float, levels: list[dict], model: str, load: list[float]) -> str:
    cores = len(os.sched_getaffinity(0))
    lines = [f"siamcli serve benchmark: model {model} ({reference['image_size']} px), {cores} CPU cores "
             f"(load average {load[0]:.1f} at start, {load[-1]:.1f} at end), one image per request, k = 5, "
             "clients on the same machine", "",
             "| clients | requests | p50 ms | p95 ms | p99 ms | images/s | mean batch |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for level in levels:
        lines.append(f"| {level['clients']} | {level['requests']} | {level['p50'] * 1e3:.1f} | {level['p95'] * 1e3:.1f} | "
                     f"{level['p99'] * 1e3:.1f} | {level['rate']:.1f} | {level['batch']:.1f} |")
    at16 = next((level for level in levels if level["clients"] == 16), None)
    at1 = next((level for level in levels if level["clients"] == 1), None)
    lines += ["", f"(a) model.predict, decoded images in memory, batch 32: {reference['predict_rate']:.1f} images/s",
              f"(ref) in-process decode + forward + search, one image: {reference['one_query_s'] * 1e3:.1f} ms",
              f"(b) `siamcli query IMAGE`, a process per image: {cli_seconds:.2f} s/image = {1 / cli_seconds:.2f} images/s", ""]
    if at16:
        lines.append(f"served images/s at 16 clients / (a) = {at16['rate'] / reference['predict_rate']:.2f} (target ≥ 0.7)")
    if at1:
        lines.append(f"p50 latency of 1 client / (ref) = {at1['p50'] / reference['one_query_s']:.2f} (target ≤ 1.3)")
    if at16:
        lines.append(f"served images/s at 16 clients / (b) = {at16['rate'] * cli_seconds:.0f}×")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
