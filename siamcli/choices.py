"""The fixed choices of siamcli's options, said once.

The engine checks values against these; the CLI takes them as option types, so `--help` lists
them and shell completion offers them. Values stay plain strings in config.json and manifests.
Nothing heavy is imported here: `siamcli --help` needs it.
"""

from __future__ import annotations

from enum import Enum

from siamcli.errors import UserError


class Choice(str, Enum):
    """A str Enum whose members print as their value."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(member.value for member in cls)

    @classmethod
    def check(cls, value: str, option: str) -> None:
        """UserError naming `option` and the allowed values unless `value` is one of them."""
        if value not in cls.values():
            raise UserError(f"{option} must be one of {', '.join(cls.values())}, got {value!r}")


class Strategy(Choice):
    AUTO = "auto"  # MirroredStrategy when more than one GPU is visible, else the default
    DEFAULT = "default"
    MIRRORED = "mirrored"
    MULTI_WORKER = "multi-worker"  # MultiWorkerMirroredStrategy from TF_CONFIG


class Mining(Choice):
    ALL = "all"  # every triplet that violates the margin
    HARD = "hard"  # batch-hard
    SEMI_HARD = "semi-hard"  # FaceNet
    RANDOM = "random"  # one random negative per anchor-positive pair


class Precision(Choice):
    FLOAT32 = "float32"
    MIXED_BFLOAT16 = "mixed_bfloat16"
    MIXED_FLOAT16 = "mixed_float16"


class LrSchedule(Choice):
    CONSTANT = "constant"
    COSINE = "cosine"  # decays to a tenth over each phase


class Pooling(Choice):
    AVG = "avg"  # global average
    GRID2 = "grid2"  # an N×N grid of averages: keeps coarse layout
    GRID3 = "grid3"
    GRID4 = "grid4"


class IndexType(Choice):
    AUTO = "auto"  # flat, then hnsw, then ivfpq, by gallery size
    FLAT = "flat"  # exact
    HNSW = "hnsw"
    IVF = "ivf"
    IVFPQ = "ivfpq"  # PQ codes re-ranked from 8-bit vectors, for galleries of millions


class Projection(Choice):
    AUTO = "auto"  # t-SNE up to 1,000 images, else PCA
    PCA = "pca"
    TSNE = "tsne"


class ExportFormat(Choice):
    SAVEDMODEL = "savedmodel"  # TensorFlow SavedModel: TF Serving, any TensorFlow runtime
    LITERT = "litert"  # LiteRT (TFLite) flatbuffer
    ONNX = "onnx"  # ONNX, converted by tf2onnx
