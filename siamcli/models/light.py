"""The light model: a run's embedding network without TensorFlow, for commands that start often.

    <run>/light/model.tflite   model.keras after its resize layer: float32 (batch, S, S, 3) RGB 0–255
                               → (batch, d) unit embeddings, run by LiteRT (ai-edge-litert)
    <run>/light/light.json     what it was made from: model.keras's sha256, the .tflite's own sha256,
                               S, d, and the check it passed when it was written

`siamcli query` and `siamcli verify` embed with it when it exists: a process that imports LiteRT,
NumPy and Pillow instead of TensorFlow starts in a fraction of the time and memory (LiteRT was
chosen over ONNX Runtime by measurement: docs/light-model.md). The resize the graph starts after
is done in NumPy (data/antialias_resize.py), bit for bit TensorFlow's, and decoding is
data/decode.py's, so its embeddings are model.keras's: within TOLERANCE, checked before the copy
is kept (models/light_writer.py, which writes it; this module never imports TensorFlow or Keras).

A copy is used only while light.json names this very model.keras (its sha256, the fingerprint an
index and a calibration record too) and the .tflite is the file it recorded; anything else is
ignored, with the reason, and `ensure_light_model` writes it again.
"""

from __future__ import annotations

import json
import os
import shlex
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from siamcli.data.antialias_resize import resize_like_model
from siamcli.data.decode import DecodeError, decode_image
from siamcli.data.scan import Skipped
from siamcli.errors import UserError
from siamcli.hashing import file_sha256
from siamcli.quiet import quietly

LIGHT_DIR = "light"
LIGHT_FILE = "model.tflite"
RECORD_FILE = "light.json"
TOLERANCE = 1e-5  # max |difference| of an embedding component, light model vs model.keras
DISABLE_ENV = "SIAMCLI_NO_LIGHT"  # set (to anything but "" or "0"): embed with TensorFlow even where a light copy exists
INSTALL_HINT = "pip install ai-edge-litert (or 'siamcli[export]')"


@dataclass(frozen=True)
class LightRecord:
    model_sha256: str  # of the model.keras it was converted from
    light_sha256: str  # of the .tflite itself
    image_size: int
    embedding_dim: int
    max_abs_diff: float  # measured against model.keras when written
    checked_on: str  # the images it was checked on, in words
    versions: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "LightRecord":
        return cls(str(data["model_sha256"]), str(data["light_sha256"]), int(data["image_size"]), int(data["embedding_dim"]),
                   float(data["max_abs_diff"]), str(data["checked_on"]), dict(data.get("versions") or {}))


def light_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / LIGHT_DIR


def current_record(run_dir: str | os.PathLike, model_sha256: str) -> tuple[LightRecord | None, str]:
    """(the record of the run's light copy, "") when it was made from the model.keras whose sha256
    is `model_sha256` and its .tflite is intact; else (None, why it cannot be used)."""
    folder = light_dir(run_dir)
    if not (folder / RECORD_FILE).is_file() or not (folder / LIGHT_FILE).is_file():
        return None, f"{folder} holds no light model"
    try:
        record = LightRecord.from_json(json.loads((folder / RECORD_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, f"{folder / RECORD_FILE} is unreadable ({type(exc).__name__})"
    if record.model_sha256 != model_sha256:
        return None, f"{folder} was made from another model.keras (sha256 {record.model_sha256[:12]}…, not {model_sha256[:12]}…)"
    if file_sha256(folder / LIGHT_FILE) != record.light_sha256:
        return None, f"{folder / LIGHT_FILE} is not the file {RECORD_FILE} recorded (changed or damaged)"
    return record, ""


@dataclass
class LightEmbedded:
    """What models.embed.embed returns, from the light model: rows in input order."""

    vectors: np.ndarray  # (n_ok, d) float32
    kept: list[int]  # input positions of the rows of `vectors`
    failures: list[Skipped]  # images that did not decode, with why


class LightModel:
    """A run's light copy, loaded: images (paths or RGB arrays of any size) in, embeddings out.
    One caller at a time, as LiteRT's interpreter allows (images are decoded on `threads` threads)."""

    def __init__(self, path: Path, record: LightRecord, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self.path = path
        self.image_size = record.image_size
        self.dim = record.embedding_dim
        self.threads = threads or _cores()
        self._runner = Interpreter(model_path=str(path), num_threads=self.threads).get_signature_runner()
        self._announced = False  # the interpreter prints a line on its first run

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """(n, S, S, 3) float32 RGB 0–255, already resized as the model resizes → (n, d) float32."""
        batch = np.ascontiguousarray(pixels, np.float32)
        if self._announced:
            return np.asarray(self._runner(pixels=batch)["embedding"], np.float32)
        vectors = quietly(lambda: self._runner(pixels=batch)["embedding"])
        self._announced = True
        return np.asarray(vectors, np.float32)

    def embed(self, images: Sequence, batch_size: int = 32) -> LightEmbedded:
        """Embed file paths, or (h, w, 3) RGB arrays of any sizes; a file that does not decode is a failure, named."""
        if batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {batch_size}")
        chunks, kept, failures = [], [], []
        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            for start in range(0, len(images), batch_size):
                prepared = list(pool.map(self._prepare, images[start:start + batch_size]))
                rows = [p for p, (pixels, _) in enumerate(prepared) if pixels is not None]
                failures += [failure for _, failure in prepared if failure is not None]
                if rows:
                    chunks.append(self.embed_pixels(np.stack([prepared[p][0] for p in rows])))
                    kept += [start + p for p in rows]
        vectors = np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)
        return LightEmbedded(vectors, kept, failures)

    def _prepare(self, image) -> tuple[np.ndarray | None, Skipped | None]:
        """(the image decoded and resized to (S, S, 3) float32, None) or (None, why it did not decode)."""
        if isinstance(image, (str, os.PathLike)):
            try:
                image = decode_image(str(image))
            except DecodeError as exc:
                return None, Skipped(exc.path, exc.reason)
        return resize_like_model(image, self.image_size), None


def open_light_model(run_dir: str | os.PathLike, model_sha256: str) -> tuple[LightModel | None, str]:
    """(the run's light model, "") when it can be used for the model.keras of sha256 `model_sha256`,
    else (None, why not and what to do: none written, another model's, damaged, LiteRT missing, DISABLE_ENV set)."""
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        return None, f"{DISABLE_ENV} is set"
    rewrite = f"write it with `siamcli export {shlex.quote(str(run_dir))} --format litert --force`"
    record, why = current_record(run_dir, model_sha256)
    if record is None:
        return None, f"{why}; {rewrite}"
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return None, f"the LiteRT runtime is not installed; {INSTALL_HINT}"
    path = light_dir(run_dir) / LIGHT_FILE
    try:
        return LightModel(path, record), ""
    except (ValueError, RuntimeError) as exc:  # the interpreter's words for a file it cannot run
        return None, f"{path} does not load ({' '.join(str(exc).split())[:160]}); {rewrite}"


def tensorflow_note(why: str) -> str:
    """The one line a command says when it embeds with TensorFlow instead of the light model."""
    return f"embedding with TensorFlow, which takes seconds to start: {why}"


def _cores() -> int:
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
