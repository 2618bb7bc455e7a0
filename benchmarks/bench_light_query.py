"""A one-image `siamcli query` with the light model against the same query with TensorFlow, and
`python -c "import tensorflow"` beside them, measured in one run (issue 24's "done when").

Every row is a whole fresh process, started from this small one, timed from start to exit; its
peak RSS is the child's own ru_maxrss (os.wait4). The rows are interleaved, `--repeat` times,
and each cell is the median. The TensorFlow query is the same command with SIAMCLI_NO_LIGHT=1,
which makes query embed with model.keras even though the light model is there. Both queries'
answers must be the same: the same ids in the same order, similarities within 1e-4.

The model is runs/demo when `make demo` has written it (copied, with its calibration, into a
temporary folder: the run itself is not touched), else an untrained 64-px model built like
tests/conftest.py's build_untrained_run. The gallery is sample_data/gallery, indexed once; the
query is sample_data/queries/s5_10.png, as `make demo` queries.

Targets: light query ≤ 0.15 × the TensorFlow import time, peak RSS ≤ 250 MB, equal answers.

    nice -n 10 python benchmarks/bench_light_query.py [--repeat 5] [--run RUN]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]
QUERY = REPO / "sample_data" / "queries" / "s5_10.png"
GALLERY = REPO / "sample_data" / "gallery"
DEMO = REPO / "runs" / "demo"
# What the light query imports, and nothing else: the floor under it.
IMPORTS = "import siamcli.cli.app, siamcli.index.search, siamcli.models.light, ai_edge_litert.interpreter, faiss"
LIGHT_TARGET = 0.15  # × the TensorFlow import time
RSS_TARGET_MB = 250

BUILD_64 = """
import sys
from pathlib import Path
from siamcli.atomic import write_json
from siamcli.models import embedding as nets
from siamcli.models.backbone_weights import WeightsChoice
from siamcli.tf_runtime import import_tensorflow
from siamcli.training.config import TrainConfig
import_tensorflow()
import keras
run = Path(sys.argv[1])
config = TrainConfig(data_dir=sys.argv[2], image_size=64, embedding_dim=128, weights="none").resolve()
keras.utils.set_random_seed(0)
backbone = nets.build_backbone(64, WeightsChoice("none", None), config.feature_layer, config.pooling)
model = nets.assemble(backbone, nets.build_head(128, int(backbone.output_shape[-1]), config.dropout), 64)
run.mkdir(parents=True, exist_ok=True)
model.save(run / "model.keras")
write_json(run / "config.json", config.to_json())
"""


def measured(command: list[str], env: dict | None = None) -> tuple[float, float, str, str]:
    """(wall seconds, peak RSS MB, stdout, stderr) of one process, from start to exit."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err, text=True, cwd=REPO, env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if child.returncode:
        sys.exit(f"{' '.join(command)} failed ({child.returncode}): {stderr[-2000:]}")
    return wall, usage.ru_maxrss / 1024, stdout, stderr


def siamcli(*args: str) -> list[str]:
    return [sys.executable, "-m", "siamcli", *map(str, args)]


def prepare(work: Path, source: str | None) -> tuple[Path, str]:
    """(a run folder with its light model and an index over sample_data/gallery, where it came from)."""
    run = work / "run"
    origin = Path(source) if source else DEMO
    if (origin / "model.keras").is_file():
        run.mkdir()
        for name in ("model.keras", "config.json", "split.json", "calibration.json"):
            if (origin / name).is_file():
                shutil.copy(origin / name, run / name)
        what = f"{origin} (copied)"
    else:
        measured([sys.executable, "-c", BUILD_64, str(run), str(GALLERY)])
        what = "an untrained 64-px model (embedding 128-d), as tests/conftest.py's build_untrained_run"
    measured(siamcli("index", GALLERY, "--model", run, "--out", run / "index", "--json"))
    measured(siamcli("export", run, "--format", "litert", "--json"))  # into the run (a copy): writes run/light/ too
    assert (run / "light" / "model.tflite").is_file(), "siamcli export did not write the light model"
    return run, what


def same_answers(light: list, tensorflow: list) -> tuple[bool, float]:
    """(the same ids in the same order, the largest similarity difference)."""
    ids = lambda answers: [[row["id"] for row in answer["results"]] for answer in answers]  # noqa: E731
    gaps = [abs(a["similarity"] - b["similarity"]) for x, y in zip(light, tensorflow) for a, b in zip(x["results"], y["results"])]
    return ids(light) == ids(tensorflow), max(gaps)


def arguments(description: str, repeat: int) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=repeat)
    parser.add_argument("--run", help="a run to measure instead of runs/demo (or the untrained 64-px model)")
    return parser.parse_args()


@contextlib.contextmanager
def prepared(source: str | None) -> Iterator[tuple[Path, Path, str]]:
    """(a scratch folder, the run prepared in it, where the run came from); the folder is removed after."""
    work = Path(tempfile.mkdtemp(prefix="siamcli-bench-light-"))
    try:
        yield (work, *prepare(work, source))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    args = arguments(__doc__, repeat=5)
    with prepared(args.run) as (_, run, what):
        query = ["query", QUERY, "--model", run, "--k", "5", "--json"]
        rows = {
            "python -c pass": ([sys.executable, "-c", "pass"], None),
            'python -c "import tensorflow"': ([sys.executable, "-c", "import tensorflow"], {"TF_CPP_MIN_LOG_LEVEL": "3"}),
            "imports of the light query": ([sys.executable, "-c", IMPORTS], None),
            "siamcli query (light model)": (siamcli(*query), None),
            "siamcli query (TensorFlow)": (siamcli(*query), {"SIAMCLI_NO_LIGHT": "1"}),
        }
        load_before = os.getloadavg()[0]
        samples = {name: [] for name in rows}
        outputs = {}
        for _ in range(args.repeat):
            for name, (command, env) in rows.items():
                wall, rss, stdout, stderr = measured(command, env)
                samples[name].append((wall, rss))
                outputs[name] = (stdout, stderr)
        report(what, rows, samples, outputs, load_before, args.repeat)


def report(what: str, rows: dict, samples: dict, outputs: dict, load_before: float, repeat: int) -> None:
    wall = {name: statistics.median(w for w, _ in values) for name, values in samples.items()}
    rss = {name: statistics.median(r for _, r in values) for name, values in samples.items()}
    tf_import = wall['python -c "import tensorflow"']
    print(f"model: {what}; query {QUERY.relative_to(REPO)}, k 5, gallery {GALLERY.relative_to(REPO)} (108 images)")
    print(f"{os.cpu_count()} CPU cores; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after; median of {repeat}")
    print(f"{'process':<32} {'wall s':>8} {'× TF import':>12} {'peak RSS MB':>12}  (each run: wall s)")
    for name in rows:
        each = ", ".join(f"{w:.2f}" for w, _ in samples[name])
        print(f"{name:<32} {wall[name]:8.3f} {wall[name] / tf_import:12.3f} {rss[name]:12.0f}  ({each})")
    light, tensorflow = (json.loads(outputs[name][0]) for name in ("siamcli query (light model)", "siamcli query (TensorFlow)"))
    ids_equal, gap = same_answers(light, tensorflow)
    ratio = wall["siamcli query (light model)"] / tf_import
    light_rss = rss["siamcli query (light model)"]
    print(f"answers: ids {'the same, in the same order' if ids_equal else 'DIFFERENT'}; largest similarity difference {gap:.2e}")
    print(f"target light query ≤ {LIGHT_TARGET} × TF import: {ratio:.3f} ({'met' if ratio <= LIGHT_TARGET else 'NOT met'}); "
          f"peak RSS ≤ {RSS_TARGET_MB} MB: {light_rss:.0f} MB ({'met' if light_rss <= RSS_TARGET_MB else 'NOT met'}); "
          f"answers equal: {'met' if ids_equal and gap <= 1e-4 else 'NOT met'}")
    print("TensorFlow query's warning: " + outputs["siamcli query (TensorFlow)"][1].strip().splitlines()[0])


if __name__ == "__main__":
    main()
