"""Which runtime runs the light model: ONNX Runtime or LiteRT, measured on the same network.

The 64-px model of bench_light_query.py (runs/demo's when it exists) is exported by the real
`siamcli export` to ONNX (tf2onnx) and to LiteRT; each file then runs in fresh processes that
import only NumPy and that runtime, `--repeat` times interleaved, medians reported:

  import       seconds to import the runtime (NumPy already imported)
  first        seconds to load the model and embed one image (what a one-image query pays)
  batch/s      images per second, steady, batches of 32 (after two warm-up batches)
  one ms       milliseconds per one-image call, steady
  peak RSS     MB, the process's ru_maxrss at the end
  installed    MB the runtime's package occupies (its files in the environment)

Both use as many threads as the process may use cores. ONNX Runtime's worker threads spin
while they wait by default, which costs on a shared machine: measured both ways.

    nice -n 10 python benchmarks/bench_light_runtime.py [--repeat 3] [--run RUN]
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_light_query import arguments, measured, prepared, siamcli  # noqa: E402

CHILD = """
import json, os, resource, sys, time
import numpy as np
runtime, path, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
threads = len(os.sched_getaffinity(0))
t0 = time.perf_counter()
if runtime == "litert":
    from ai_edge_litert.interpreter import Interpreter
else:
    import onnxruntime
t1 = time.perf_counter()
if runtime == "litert":
    runner = Interpreter(model_path=path, num_threads=threads).get_signature_runner()
    run = lambda pixels: runner(pixels=pixels)["embedding"]
else:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    if runtime == "onnx-nospin":
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
    run = lambda pixels: session.run(["embedding"], {"pixels": pixels})[0]
batch = np.random.default_rng(0).uniform(0, 255, (32, size, size, 3)).astype(np.float32)
run(batch[:1])
t2 = time.perf_counter()
run(batch); run(batch)
t3 = time.perf_counter()
for _ in range(5):
    run(batch)
t4 = time.perf_counter()
for _ in range(20):
    run(batch[:1])
t5 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "first": t2 - t1, "batch": 160 / (t4 - t3), "one_ms": (t5 - t4) / 20 * 1000,
                  "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

RUNTIMES = {"litert": ("LiteRT (ai-edge-litert)", "ai-edge-litert"), "onnx": ("ONNX Runtime", "onnxruntime"),
            "onnx-nospin": ("ONNX Runtime, no spinning", "onnxruntime")}


def installed_mb(distribution: str) -> float:
    from importlib.metadata import distribution as find

    files = find(distribution).files or []
    return sum(Path(file.locate()).stat().st_size for file in files if Path(file.locate()).is_file()) / 1e6


def main() -> None:
    args = arguments(__doc__, repeat=3)
    with prepared(args.run) as (work, run, what):
        measured(siamcli("export", run, "--format", "onnx", "--out", work / "onnx", "--json"))
        size = json.loads((run / "light" / "light.json").read_text())["image_size"]
        files = {"litert": run / "light" / "model.tflite", "onnx": work / "onnx" / "model.onnx", "onnx-nospin": work / "onnx" / "model.onnx"}
        load = os.getloadavg()[0]
        results = {name: [] for name in RUNTIMES}
        for _ in range(args.repeat):
            for name in RUNTIMES:
                results[name].append(json.loads(measured([sys.executable, "-c", CHILD, name, str(files[name]), str(size)])[2]))
        print(f"model: {what}, {size} px; {os.cpu_count()} CPU cores, load average {load:.1f} before, "
              f"{os.getloadavg()[0]:.1f} after; median of {args.repeat} fresh processes each")
        print(f"{'runtime':<28} {'import s':>9} {'first s':>8} {'batch/s':>8} {'one ms':>7} {'peak RSS MB':>12} {'installed MB':>13} {'file MB':>8}")
        for name, (title, distribution) in RUNTIMES.items():
            cell = lambda key, rows=results[name]: statistics.median(r[key] for r in rows)  # noqa: E731
            print(f"{title:<28} {cell('import'):9.3f} {cell('first'):8.3f} {cell('batch'):8.0f} {cell('one_ms'):7.1f} "
                  f"{cell('rss'):12.0f} {installed_mb(distribution):13.0f} {files[name].stat().st_size / 1e6:8.1f}")


if __name__ == "__main__":
    main()
