"""Shared fixtures: real image files in tmp_path, the repository's sample_data/, and a tiny real run.

Everything is real and small: PNG/JPEG files written with Pillow, a ResNet50 built with
weights=None at 32 px, and a run directory in the exact format `siamcli train` writes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DATA = REPO / "sample_data"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


# Fixtures that build a ResNet50 run: a test that uses one (directly or through another fixture)
# is `slow`, as is every `train` test. `make check` runs the tests that are not.
MODEL_FIXTURES = frozenset({"tiny_run", "resnet_weights", "reference_run"})


# `make test` runs two pytest-xdist workers, each given whole files (--dist loadfile: a module's
# fixtures are built once) in collection order (--no-loadscope-reorder). In a worker, files whose
# tests use these costly fixtures come first, the longest first, so that no long file starts last
# while the other worker idles. The order of a plain `pytest` run is left as it is.
LONG_FIRST = ("reference_run", "resnet_weights", "notebook_folder")


def _long_rank(item) -> int:
    return next((rank for rank, name in enumerate(LONG_FIRST) if name in item.fixturenames), len(LONG_FIRST))


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("train") or MODEL_FIXTURES.intersection(item.fixturenames):
            item.add_marker(pytest.mark.slow)
    if getattr(config, "workerinput", None) is not None:  # an xdist worker
        first = {}  # file → the best rank of any of its tests
        for item in items:
            first[item.path] = min(first.get(item.path, len(LONG_FIRST)), _long_rank(item))
        items[:] = sorted(items, key=lambda item: first[item.path])  # stable: files stay whole and in order


def identity_pattern(identity: int, size: int = 48) -> np.ndarray:
    """A fixed random picture per identity: its photos are noisy variants of it."""
    rng = np.random.default_rng(1000 + identity)
    coarse = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.BILINEAR), np.float32)


def write_identity_folders(root: Path, identities: int = 4, per_identity: int = 5, size: int = 48, seed: int = 0, ext: str = ".png") -> Path:
    """root/id_<i>/img_<j><ext>: images that cluster by identity (noise around a pattern)."""
    rng = np.random.default_rng(seed)
    for identity in range(identities):
        folder = root / f"id_{identity}"
        folder.mkdir(parents=True, exist_ok=True)
        base = identity_pattern(identity, size)
        for j in range(per_identity):
            noisy = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(folder / f"img_{j}{ext}")
    return root


@pytest.fixture
def image_folders(tmp_path):
    """Factory: make_folders(name, identities, per_identity, size) → Path."""

    def make(name: str = "data", identities: int = 4, per_identity: int = 5, size: int = 48, seed: int = 0, ext: str = ".png") -> Path:
        return write_identity_folders(tmp_path / name, identities, per_identity, size, seed, ext)

    return make


def build_untrained_run(run_dir: Path, data_dir: Path, val: list[str], train: list[str], image_size: int = 32, embedding_dim: int = 16, seed: int = 0) -> Path:
    """A run directory exactly as `siamcli train` writes it, with an untrained model.

    Much faster than training; for tests of commands that consume a run (index, query, evaluate).
    """
    from siamcli.models import embedding as nets
    from siamcli.models.backbone_weights import WeightsChoice
    from siamcli.run_config import RunConfig, RunSplit, write_config, write_split
    from siamcli.tf_runtime import import_tensorflow
    from siamcli.training.config import TrainConfig

    import_tensorflow()
    import keras

    config = TrainConfig(data_dir=str(data_dir), image_size=image_size, embedding_dim=embedding_dim, weights="none").resolve()
    keras.utils.set_random_seed(seed)
    backbone = nets.build_backbone(image_size, WeightsChoice("none", None), config.feature_layer, config.pooling)
    head = nets.build_head(embedding_dim, int(backbone.output_shape[-1]), config.dropout)
    model = nets.assemble(backbone, head, image_size)
    run_dir.mkdir(parents=True, exist_ok=True)
    model.save(run_dir / "model.keras")
    write_config(run_dir / "config.json", RunConfig(options=config.to_json()))
    write_split(run_dir / "split.json", RunSplit(train=train, val=val))
    return run_dir


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """Session-wide: a labelled folder (6 identities × 5 images) and an untrained 32 px run on it.

    Returns the run directory; its config.json names the data folder, split.json holds
    id_4 and id_5 out. Tests must not modify it (copy it first).
    """
    base = tmp_path_factory.mktemp("tiny")
    data = write_identity_folders(base / "data", identities=6, per_identity=5, size=40)
    return build_untrained_run(base / "runs" / "tiny", data, val=["id_4", "id_5"], train=[f"id_{i}" for i in range(4)])


def resnet_weights_file(directory: Path, image_size: int = 32) -> Path:
    """A ResNet50 (include_top=False) weights file made in a subprocess, for the pretrained regime
    (BatchNorm frozen, no dropout), whose runs are exactly reproducible."""
    import subprocess

    script = (
        "import sys\nfrom siamcli.tf_runtime import import_tensorflow\nimport_tensorflow()\nimport keras\n"
        "keras.utils.set_random_seed(0)\n"
        f"keras.applications.ResNet50(include_top=False, weights=None, input_shape=({image_size}, {image_size}, 3)).save_weights(sys.argv[1])\n"
    )
    path = directory / "start.weights.h5"
    subprocess.run([sys.executable, "-c", script, str(path)], check=True)
    return path


@pytest.fixture(scope="session")
def resnet_weights(tmp_path_factory) -> Path:
    """Session-wide: one ResNet50 (32 px, include_top=False) weights file for pretrained-regime runs."""
    return resnet_weights_file(tmp_path_factory.mktemp("resnet_weights"))


# One uninterrupted pretrained-regime run for the fault and multi-worker tests: they kill,
# resume or distribute runs with these options and compare every epoch's loss with this one. The
# same seed draws the same P×K batches whatever the epoch count (constant learning rate, no early
# stopping: --patience 0), so a run of fewer epochs must match its first rows.
REFERENCE_OPTIONS = ["--image-size", "32", "--embedding-dim", "8", "--batch-size", "8", "--images-per-identity", "2",
                     "--steps-per-epoch", "3", "--frozen-epochs", "1", "--finetune-epochs", "3", "--no-augment",
                     "--dropout", "0", "--seed", "4", "--finetune-from", "conv5_block1_out", "--finetune-lr", "1e-3",
                     "--patience", "0", "--json"]


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, resnet_weights) -> tuple[Path, list[str], Path]:
    """(data, options, run_dir): `siamcli train` with REFERENCE_OPTIONS and the session's weights
    file on 5 identities × 4 images, 1 frozen + 3 fine-tune epochs, uninterrupted. Read-only."""
    base = tmp_path_factory.mktemp("reference")
    data = write_identity_folders(base / "data", identities=5, per_identity=4, size=32)
    options = [*REFERENCE_OPTIONS, "--weights", str(resnet_weights)]
    single = run_cli("train", str(data), "--out", str(base / "run"), "--strategy", "default", *options, cwd=base)
    assert single.returncode == 0, single.stderr[-3000:]
    return data, options, base / "run"


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600):
    """Run the real `siamcli` entry point in a subprocess; returns CompletedProcess (text)."""
    import subprocess

    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "siamcli", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def write_test_calibration(run_dir: Path, threshold: float, reliable: bool = True, model_sha256: str | None = None) -> Path:
    """<run>/calibration.json as `siamcli evaluate` writes it, for the run's own model unless told otherwise."""
    from siamcli.calibration import Calibration, write_calibration
    from siamcli.hashing import file_sha256

    sha = model_sha256 or file_sha256(run_dir / "model.keras")
    calibration = Calibration(
        threshold=threshold, operating_point="eer", target_far=None, far=0.01, far_ci95=(0.0, 0.02), frr=0.01,
        frr_ci95=(0.0, 0.02), identities=12 if reliable else 2, same_pairs=200, different_pairs=2000, reliable=reliable,
        reason="" if reliable else "measured on 2 identities; a threshold needs at least 10 with 2 or more images each",
        provenance={"model_sha256": sha},
    )
    return write_calibration(run_dir, calibration)


@pytest.fixture(scope="session")
def serving_session():
    """Stops the one `siamcli serve` process the serve tests share, at the end of the session."""
    from serve_support import stop_shared

    yield
    stop_shared()


@pytest.fixture
def served(serving_session, tmp_path_factory, tiny_run):
    """(server, run): the session's shared server over sample_data's gallery (started again if a test stopped it)."""
    from serve_support import shared_server

    server, run, _ = shared_server(tmp_path_factory, tiny_run)
    return server, run
