"""Writing a run's light model (models/light.py): model.keras → LiteRT, checked, then kept.

    ensure_light_model(run)    # <run>/light/model.tflite for the run's model.keras, written if missing or stale

The network is converted after its resize layer (LiteRT has no op for TensorFlow's antialiased
resize; the light path does it in NumPy), through a scratch SavedModel with builtin ops only, as
`siamcli export --format litert` converts it. The copy is kept only when its embeddings, through
the light path's own preprocessing, equal model.keras's within light.TOLERANCE on a fixed set of
images of several sizes (the model's side, odd sizes, 1×N, N×1, smaller than the side). The
folder is written under a temporary name and swapped in whole (atomic.atomic_directory), its
record (light.json, with model.keras's sha256) inside it, so a reader sees a complete copy of
one model or none.

Imports TensorFlow (only inside the functions that convert).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from siamcli import __version__
from siamcli.atomic import atomic_directory
from siamcli.errors import UserError
from siamcli.events import NO_EVENTS, Events
from siamcli.faults import crash_point
from siamcli.hashing import file_sha256
from siamcli.models.light import LIGHT_FILE, RECORD_FILE, TOLERANCE, LightModel, LightRecord, current_record, light_dir
from siamcli.quiet import quietly
from siamcli.rundir import RunPaths, find_run
from siamcli.tf_runtime import import_tensorflow


def ensure_light_model(run: RunPaths | str | Path | None, events: Events | None = None, model=None) -> Path | None:
    """The run's light model (its .tflite path), written first when it is missing or was made from
    another model.keras; None when it cannot be made, with the reason as an `events.message`.

    `run`: a RunPaths, a run directory or its model.keras (None: runs/latest). `model`: the Keras
    model loaded from that very model.keras, when the caller holds it (it is not loaded again)."""
    events = events or NO_EVENTS
    paths = run if isinstance(run, RunPaths) else find_run(None if run is None else str(run))  # None: runs/latest
    fingerprint = file_sha256(paths.model)
    if current_record(paths.run_dir, fingerprint)[0] is not None:
        return light_dir(paths.run_dir) / LIGHT_FILE
    try:
        import ai_edge_litert.interpreter  # noqa: F401  (the runtime that checks it, and that will run it)
    except ImportError:
        events.message(f"no light model written for {paths.model}: the LiteRT runtime is not installed (pip install ai-edge-litert)")
        return None
    events.stage("writing the light model (LiteRT)")
    try:
        return write_light_model(paths, fingerprint, model)
    except UserError as exc:
        events.message(f"no light model written for {paths.model}: {exc}")
    except OSError as exc:  # a run folder one may read but not write (a shared or read-only run)
        events.message(f"no light model written for {paths.model}: cannot write {light_dir(paths.run_dir)} ({exc.strerror or exc})")
    except Exception as exc:  # noqa: BLE001 — the converter's own words; the run is fine without the copy
        events.message(f"no light model written for {paths.model}: the LiteRT converter failed ({type(exc).__name__}: "
                       f"{' '.join(str(exc).split())[:200]})")
    return None


def write_light_model(paths: RunPaths, fingerprint: str, model=None) -> Path:
    """Convert the run's model.keras (sha256 `fingerprint`; `model`: it, loaded), check it, and keep
    it; a UserError (nothing kept) when it does not reproduce model.keras within TOLERANCE."""
    from siamcli.models.embed import embed, model_image_size
    from siamcli.models.embedding import load_embedding_model

    model = model if model is not None else load_embedding_model(paths.model)
    size, dim = model_image_size(model), int(model.output_shape[-1])
    images = check_images(size)
    reference = embed(model, images, batch_size=len(images)).vectors
    with atomic_directory(light_dir(paths.run_dir)) as tmp:
        (tmp / LIGHT_FILE).write_bytes(litert_bytes(model, size))
        record = LightRecord(fingerprint, file_sha256(tmp / LIGHT_FILE), size, dim, 0.0, _described(images), _versions())
        light = LightModel(tmp / LIGHT_FILE, record).embed(images, batch_size=len(images)).vectors
        diff = float(np.max(np.abs(light - reference))) if light.shape == reference.shape else float("inf")
        if not diff <= TOLERANCE:  # NaN fails too
            raise UserError(f"its LiteRT conversion differs from model.keras by {diff:.3g} (> {TOLERANCE:g}); "
                            "query and verify use TensorFlow; report this with the run's config.json")
        record = LightRecord(**{**record.to_json(), "max_abs_diff": diff})
        crash_point("light-before-record")  # tests: killed here, no light model may appear
        (tmp / RECORD_FILE).write_text(json.dumps(record.to_json(), indent=2) + "\n", encoding="utf-8")
    return light_dir(paths.run_dir) / LIGHT_FILE


def serving_function(model, size: int):
    """model.keras without its Resizing layer, as a tf.function of (batch, size, size, 3) float32 pixels."""
    tf = import_tensorflow()
    head, backbone = model.get_layer("head"), model.get_layer("backbone")

    @tf.function(input_signature=[tf.TensorSpec((None, size, size, 3), tf.float32, name="pixels")])
    def serve(pixels):
        return {"embedding": head(backbone(pixels, training=False), training=False)}

    return serve


def litert_bytes(model, size: int) -> bytes:
    """The .tflite of `serving_function`, converted from a scratch SavedModel (that path keeps the
    signature: input `pixels`, output `embedding`), builtin ops only (the plain interpreter runs it)."""
    tf = import_tensorflow()
    import keras

    archive = keras.export.ExportArchive()
    archive.add_endpoint("serving_default", serving_function(model, size))
    scratch = tempfile.mkdtemp(prefix="siamcli-savedmodel.")
    try:
        quietly(lambda: archive.write_out(scratch, verbose=False))
        converter = tf.lite.TFLiteConverter.from_saved_model(scratch, signature_keys=["serving_default"])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        return quietly(converter.convert)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def check_images(size: int) -> list[np.ndarray]:
    """The fixed images a light model is checked on: noise, a gradient and flat grey at the model's
    side, and noise at odd sizes (larger and uneven, a row, a column, a long strip, smaller)."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    gradient = np.stack([np.add.outer(ramp, ramp) / 2, np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size))], axis=-1)
    images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(3)]
    images += [gradient.round().astype(np.uint8), np.full((size, size, 3), 128, np.uint8)]
    for shape in ((size + 13, 2 * size + 5), (1, 3 * size), (3 * size, 1), (7, 20 * size), (size // 2 + 1, size // 3 + 2)):
        images.append(rng.integers(0, 256, (*shape, 3), dtype=np.uint8))
    return images


def _described(images: list[np.ndarray]) -> str:
    return f"{len(images)} synthetic images: " + ", ".join(f"{image.shape[0]}x{image.shape[1]}" for image in images)


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    versions = {"siamcli": __version__, "tensorflow": import_tensorflow().__version__}
    try:
        versions["ai-edge-litert"] = version("ai-edge-litert")
    except PackageNotFoundError:
        pass
    return versions
